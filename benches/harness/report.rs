//! The results: rows of (scenario, jobq figure, baseline figure, ratio, target), printed as a
//! table and written as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    JobsPerSec,
    Ms,
    Secs,
    MBps,
    KiB,
    Count,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::JobsPerSec => "/s",
            Unit::Ms => " ms",
            Unit::Secs => " s",
            Unit::MBps => " MB/s",
            Unit::KiB => " KiB",
            Unit::Count => "",
        }
    }

    pub fn format(self, v: f64) -> String {
        let number = match self {
            Unit::JobsPerSec | Unit::Count | Unit::MBps => group(v.round()),
            Unit::Ms | Unit::KiB => {
                if v.abs() >= 100.0 {
                    group(v.round())
                } else {
                    format!("{v:.1}")
                }
            }
            Unit::Secs => format!("{v:.2}"),
        };
        format!("{number}{}", self.suffix())
    }
}

/// `12345.0` -> `12,345`.
fn group(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// What the owner checks a figure against.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// jobq >= value.
    AtLeast { value: f64 },
    /// jobq <= value.
    AtMost { value: f64 },
    /// jobq / baseline >= ratio.
    RatioAtLeast { ratio: f64 },
    /// jobq >= ratio x `reference` (jobq's own figure of another row, named by `of`).
    OwnAtLeast {
        ratio: f64,
        reference: Option<f64>,
        of: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Miss,
    /// A figure the target needs is missing.
    Unknown,
    /// No target for this row.
    None,
}

impl Target {
    fn check(&self, jobq: Option<f64>, baseline: Option<f64>) -> Verdict {
        let Some(j) = jobq.filter(|v| v.is_finite()) else {
            return Verdict::Unknown;
        };
        let ok = match self {
            Target::AtLeast { value } => j >= *value,
            Target::AtMost { value } => j <= *value,
            Target::RatioAtLeast { ratio } => match baseline.filter(|b| *b > 0.0) {
                Some(b) => j / b >= *ratio,
                None => return Verdict::Unknown,
            },
            Target::OwnAtLeast {
                ratio, reference, ..
            } => match reference.filter(|r| *r > 0.0) {
                Some(r) => j >= ratio * r,
                None => return Verdict::Unknown,
            },
        };
        if ok { Verdict::Pass } else { Verdict::Miss }
    }

    fn describe(&self, unit: Unit) -> String {
        match self {
            Target::AtLeast { value } => format!(">= {}", unit.format(*value)),
            Target::AtMost { value } => format!("<= {}", unit.format(*value)),
            Target::RatioAtLeast { ratio } => format!(">= {ratio:.1}x"),
            Target::OwnAtLeast { ratio, of, .. } => format!(">= {ratio:.1}x {of}"),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub jobq: Option<f64>,
    pub baseline: Option<f64>,
    pub unit: Unit,
    pub targets: Vec<Target>,
    /// Settings and caveats (what the baseline was, partial runs, ...).
    pub note: String,
}

impl Row {
    pub fn new(scenario: impl Into<String>, unit: Unit) -> Self {
        Self {
            scenario: scenario.into(),
            jobq: None,
            baseline: None,
            unit,
            targets: Vec::new(),
            note: String::new(),
        }
    }

    pub fn jobq(mut self, v: Option<f64>) -> Self {
        self.jobq = v;
        self
    }

    pub fn baseline(mut self, v: Option<f64>) -> Self {
        self.baseline = v;
        self
    }

    pub fn target(mut self, t: Target) -> Self {
        self.targets.push(t);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        match (self.jobq, self.baseline) {
            (Some(j), Some(b)) if b > 0.0 && j.is_finite() => Some(j / b),
            _ => None,
        }
    }

    pub fn verdict(&self) -> Verdict {
        let mut verdict = Verdict::None;
        for t in &self.targets {
            match t.check(self.jobq, self.baseline) {
                Verdict::Miss => return Verdict::Miss,
                Verdict::Unknown => verdict = Verdict::Unknown,
                Verdict::Pass if verdict == Verdict::None => verdict = Verdict::Pass,
                _ => {}
            }
        }
        verdict
    }

    fn cells(&self) -> [String; 7] {
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| self.unit.format(v));
        let targets: Vec<String> = self.targets.iter().map(|t| t.describe(self.unit)).collect();
        let verdict = match self.verdict() {
            Verdict::Pass => "pass",
            Verdict::Miss => "MISS",
            Verdict::Unknown => "?",
            Verdict::None => "",
        };
        [
            self.scenario.clone(),
            fmt(self.jobq),
            fmt(self.baseline),
            self.ratio()
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
            if targets.is_empty() {
                "-".to_owned()
            } else {
                targets.join(" & ")
            },
            verdict.to_owned(),
            self.note.clone(),
        ]
    }
}

/// How one scenario went.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioOutcome {
    pub name: String,
    pub completed: bool,
    pub error: Option<String>,
    pub seconds: f64,
}

/// Everything measured in one invocation.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub scenarios: Vec<ScenarioOutcome>,
    /// Raw measurements per scenario and run (`details[scenario][run] = {...}`).
    pub details: serde_json::Map<String, Value>,
}

impl Report {
    pub fn detail(&mut self, scenario: &str, key: &str, value: Value) {
        let entry = self
            .details
            .entry(scenario.to_owned())
            .or_insert_with(|| json!({}));
        if let Value::Object(map) = entry {
            map.insert(key.to_owned(), value);
        }
    }

    pub fn table(&self) -> String {
        let header = [
            "scenario", "jobq", "baseline", "ratio", "target", "result", "note",
        ]
        .map(str::to_owned);
        let rows: Vec<[String; 7]> = std::iter::once(header)
            .chain(self.rows.iter().map(Row::cells))
            .collect();
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let mut line = String::from("|");
            for (c, (cell, w)) in row.iter().zip(widths).enumerate() {
                // Figures right-aligned, text left-aligned.
                if (1..=3).contains(&c) && i > 0 {
                    let _ = write!(line, " {cell:>w$} |");
                } else {
                    let _ = write!(line, " {cell:<w$} |");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if i == 0 {
                let mut sep = String::from("|");
                for (c, w) in widths.iter().enumerate() {
                    let dashes = "-".repeat(*w);
                    if (1..=3).contains(&c) {
                        let _ = write!(sep, "-{dashes}:|");
                    } else {
                        let _ = write!(sep, "-{dashes}-|");
                    }
                }
                out.push_str(&sep);
                out.push('\n');
            }
        }
        out
    }

    pub fn write_json(&self, path: &Path, meta: Value) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario,
                    "jobq": r.jobq,
                    "baseline": r.baseline,
                    "ratio": r.ratio(),
                    "unit": r.unit,
                    "targets": r.targets,
                    "verdict": r.verdict(),
                    "note": r.note,
                })
            })
            .collect();
        let doc = json!({
            "meta": meta,
            "rows": rows,
            "scenarios": self.scenarios,
            "details": self.details,
        });
        let text = serde_json::to_string_pretty(&doc).context("serialise the results")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}
