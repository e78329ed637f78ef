//! Tests of the gratuitous ARP frame and of the announcement schedule.

use std::time::{Duration, Instant};

use super::{garp_frame, AnnounceSchedule, Announcement, FRAME_LEN};

#[test]
fn the_frame_announces_the_vip_at_the_mac() {
    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let frame = garp_frame(mac, "10.0.0.100".parse().expect("ip"));
    assert_eq!(frame.len(), FRAME_LEN);
    #[rustfmt::skip]
    let expected: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,       // destination: broadcast
        0x02, 0x11, 0x22, 0x33, 0x44, 0x55,       // source: the interface
        0x08, 0x06,                               // ARP
        0x00, 0x01, 0x08, 0x00, 6, 4,             // Ethernet, IPv4, lengths
        0x00, 0x01,                               // request
        0x02, 0x11, 0x22, 0x33, 0x44, 0x55,       // sender MAC
        10, 0, 0, 100,                            // sender IP: the VIP
        0, 0, 0, 0, 0, 0,                         // target MAC: zero (RFC 5227)
        10, 0, 0, 100,                            // target IP: the VIP
    ];
    assert_eq!(frame, expected);
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn takeover_burst_second_burst_and_refreshes() {
    let mut schedule = AnnounceSchedule::new(5, Some(5 * SECOND), Some(3 * SECOND));
    let t0 = Instant::now();
    assert_eq!(schedule.due(t0), None, "nothing before the takeover");
    schedule.start();
    assert_eq!(schedule.due(t0), Some(Announcement::FirstBurst(5)));
    schedule.sent(Announcement::FirstBurst(5), t0);
    assert_eq!(schedule.due(t0), None);
    assert_eq!(schedule.next_due(), Some(t0 + 3 * SECOND));
    assert_eq!(schedule.due(t0 + 2 * SECOND), None);
    assert_eq!(schedule.due(t0 + 3 * SECOND), Some(Announcement::Refresh));
    schedule.sent(Announcement::Refresh, t0 + 3 * SECOND);
    assert_eq!(schedule.due(t0 + 4 * SECOND), None);
    assert_eq!(schedule.due(t0 + 5 * SECOND), Some(Announcement::SecondBurst(5)));
    schedule.sent(Announcement::SecondBurst(5), t0 + 5 * SECOND);
    // The burst restarted the refresh period; no second burst ever again.
    assert_eq!(schedule.due(t0 + 7 * SECOND), None);
    assert_eq!(schedule.due(t0 + 8 * SECOND), Some(Announcement::Refresh));
    schedule.sent(Announcement::Refresh, t0 + 8 * SECOND);
    assert_eq!(schedule.due(t0 + 100 * SECOND), Some(Announcement::Refresh));

    schedule.stop();
    assert_eq!(schedule.due(t0 + 100 * SECOND), None);
    assert_eq!(schedule.next_due(), None);
}

#[test]
fn an_unsent_burst_stays_owed_and_zero_switches_off() {
    let mut schedule = AnnounceSchedule::new(3, None, None);
    let t0 = Instant::now();
    schedule.start();
    // The caller failed to send it: still owed later.
    assert_eq!(schedule.due(t0 + 10 * SECOND), Some(Announcement::FirstBurst(3)));
    schedule.sent(Announcement::FirstBurst(3), t0 + 10 * SECOND);
    assert_eq!(schedule.due(t0 + 1000 * SECOND), None, "no second burst, no refresh");
    assert_eq!(Announcement::FirstBurst(3).frames(), 3);
    assert_eq!(Announcement::Refresh.frames(), 1);
}
