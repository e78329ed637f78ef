//! A Prometheus-like scraper for the latency phase: `GET /metrics` on the leader every 100 ms
//! while the phase runs, so the report says what a scrape costs (`metrics_scrape_ms_p99`) and
//! how many families it carries (`metrics_families`), next to a submit→running p99 measured
//! under it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Prometheus' shortest usual interval, ten times over.
pub const SCRAPE_INTERVAL: Duration = Duration::from_millis(100);

/// What the scrapes saw.
#[derive(Debug, Default)]
pub struct Scrapes {
    /// Each scrape's time, in ms.
    pub durations_ms: Vec<f64>,
    /// The `# TYPE` lines of the last scrape.
    pub n_families: usize,
}

/// Scrapes `url` every [`SCRAPE_INTERVAL`] until `stop` is set; a failed scrape is an error.
pub fn scrape_until(url: &str, stop: &AtomicBool) -> Result<Scrapes> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let mut scrapes = Scrapes::default();
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        let response = match agent.get(url).call() {
            Ok(response) => response,
            Err(error) => bail!("GET {url}: {error}"),
        };
        let text = response.into_string().with_context(|| format!("GET {url}: read the answer"))?;
        scrapes.durations_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        scrapes.n_families = text.lines().filter(|line| line.starts_with("# TYPE ")).count();
        std::thread::sleep(SCRAPE_INTERVAL.saturating_sub(started.elapsed()));
    }
    Ok(scrapes)
}
