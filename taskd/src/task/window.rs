//! `RuntimeWindow`: the local time of day during which a task may run (`set_runtime`), such as
//! `22:00-06:00` for a copy that must stay out of office hours. Outside it a runner pauses the
//! task at its next extent boundary.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveTime, Timelike};
use serde::{Deserialize, Serialize};

/// A daily window `[start, end)` in local time, minute resolution. When `end` is earlier than
/// `start` the window wraps midnight (`22:00-06:00`); when both are equal it is the whole day
/// (so `set_runtime <id> 0 0 0 0` lifts the restriction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawWindow", into = "RawWindow")]
pub struct RuntimeWindow {
    start_hour: u8,
    start_min: u8,
    end_hour: u8,
    end_min: u8,
}

/// An hour or minute out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{field} must be 0..=23, got {value}")]
    Hour { field: &'static str, value: u32 },
    #[error("{field} must be 0..=59, got {value}")]
    Minute { field: &'static str, value: u32 },
    #[error("a runtime window looks like `HH:MM-HH:MM`, got `{0}`")]
    Syntax(String),
}

impl RuntimeWindow {
    /// A validated window; the arguments are in the order of `zbs-task task set_runtime`.
    pub fn new(start_hour: u32, start_min: u32, end_hour: u32, end_min: u32) -> Result<RuntimeWindow, WindowError> {
        let hour =
            |field, value: u32| if value < 24 { Ok(value as u8) } else { Err(WindowError::Hour { field, value }) };
        let minute =
            |field, value: u32| if value < 60 { Ok(value as u8) } else { Err(WindowError::Minute { field, value }) };
        Ok(RuntimeWindow {
            start_hour: hour("start_hour", start_hour)?,
            start_min: minute("start_min", start_min)?,
            end_hour: hour("end_hour", end_hour)?,
            end_min: minute("end_min", end_min)?,
        })
    }

    pub fn start_hour(&self) -> u32 {
        u32::from(self.start_hour)
    }

    pub fn start_min(&self) -> u32 {
        u32::from(self.start_min)
    }

    pub fn end_hour(&self) -> u32 {
        u32::from(self.end_hour)
    }

    pub fn end_min(&self) -> u32 {
        u32::from(self.end_min)
    }

    /// True when the window covers the whole day (start equals end).
    pub fn is_all_day(&self) -> bool {
        self.start_minute_of_day() == self.end_minute_of_day()
    }

    /// True when a task may run at local time `time` (seconds are ignored).
    pub fn contains(&self, time: NaiveTime) -> bool {
        let now = time.hour() * 60 + time.minute();
        let (start, end) = (self.start_minute_of_day(), self.end_minute_of_day());
        match start.cmp(&end) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => start <= now && now < end,
            std::cmp::Ordering::Greater => now >= start || now < end,
        }
    }

    /// `contains` for the machine's local time now.
    pub fn contains_now(&self) -> bool {
        self.contains(chrono::Local::now().time())
    }

    fn start_minute_of_day(&self) -> u32 {
        self.start_hour() * 60 + self.start_min()
    }

    fn end_minute_of_day(&self) -> u32 {
        self.end_hour() * 60 + self.end_min()
    }
}

impl fmt::Display for RuntimeWindow {
    /// `HH:MM-HH:MM`, which `FromStr` reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.start_hour, self.start_min, self.end_hour, self.end_min)
    }
}

impl FromStr for RuntimeWindow {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<RuntimeWindow, WindowError> {
        let syntax = || WindowError::Syntax(text.to_string());
        let parse_time = |part: &str| -> Result<(u32, u32), WindowError> {
            let (hour, minute) = part.trim().split_once(':').ok_or_else(syntax)?;
            let number = |digits: &str| {
                if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                digits.parse::<u32>().map_err(|_| syntax())
            };
            Ok((number(hour)?, number(minute)?))
        };
        let (start, end) = text.split_once('-').ok_or_else(syntax)?;
        let (start_hour, start_min) = parse_time(start)?;
        let (end_hour, end_min) = parse_time(end)?;
        RuntimeWindow::new(start_hour, start_min, end_hour, end_min)
    }
}

/// The JSON shape: four named numbers, validated on the way in.
#[derive(Serialize, Deserialize)]
struct RawWindow {
    start_hour: u32,
    start_min: u32,
    end_hour: u32,
    end_min: u32,
}

impl TryFrom<RawWindow> for RuntimeWindow {
    type Error = WindowError;

    fn try_from(raw: RawWindow) -> Result<RuntimeWindow, WindowError> {
        RuntimeWindow::new(raw.start_hour, raw.start_min, raw.end_hour, raw.end_min)
    }
}

impl From<RuntimeWindow> for RawWindow {
    fn from(window: RuntimeWindow) -> RawWindow {
        RawWindow {
            start_hour: window.start_hour(),
            start_min: window.start_min(),
            end_hour: window.end_hour(),
            end_min: window.end_min(),
        }
    }
}
