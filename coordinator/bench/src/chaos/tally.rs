//! Every message a scenario published, and what became of it: a document
//! in the index, a dead letter (and why), nothing yet — or more than one
//! of these, which must not happen.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lambdex::queue::dlq::letter_id;
use serde::Serialize;

/// One scenario's outcome, as the table prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    /// Messages published: good jobs and hostile ones.
    pub published: usize,
    /// Published jobs with a document.
    pub stored: usize,
    /// Dead letters by reason.
    pub dead_lettered: BTreeMap<String, usize>,
    /// Published messages with neither a document nor a dead letter.
    pub lost: usize,
    /// Outcomes beyond one per message: a job stored and dead-lettered,
    /// or dead-lettered twice.
    pub duplicates: usize,
    /// Good jobs (those that must be stored) without a document.
    pub good_not_stored: usize,
    /// From the first publish to the last message accounted for.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    /// The largest peak resident memory of the workers, in MB.
    pub peak_memory_mb: u32,
}

impl Row {
    pub fn dead_total(&self) -> usize {
        self.dead_lettered.values().sum()
    }
}

/// The accounting while a scenario runs.
#[derive(Debug, Default)]
pub struct Tally {
    /// The id (job id, or `msg-…` for what is not a job) of every message.
    published: BTreeSet<String>,
    /// Those that must end as documents.
    good: BTreeSet<String>,
    stored: BTreeSet<String>,
    /// Every dead letter's id and reason, in the order taken.
    dead: Vec<(String, String)>,
}

impl Tally {
    /// A message that must end as a document (`good`) or a dead letter.
    pub fn published(&mut self, body: &[u8], good: bool) {
        let id = letter_id(body);
        if good {
            self.good.insert(id.clone());
        }
        self.published.insert(id);
    }

    pub fn dead_letter(&mut self, body: &[u8], reason: String) {
        self.dead.push((letter_id(body), reason));
    }

    pub fn stored(&mut self, job_ids: impl IntoIterator<Item = String>) {
        self.stored.extend(job_ids);
    }

    pub fn stored_count(&self) -> usize {
        self.stored.len()
    }

    /// Whether every published message has an outcome.
    pub fn settled(&self) -> bool {
        self.accounted().len() >= self.published.len()
    }

    fn accounted(&self) -> BTreeSet<&String> {
        self.stored
            .iter()
            .chain(self.dead.iter().map(|(id, _)| id))
            .filter(|id| self.published.contains(*id))
            .collect()
    }

    pub fn row(&self, scenario: &str, drain: Duration, peak_memory_mb: u32) -> Row {
        let mut dead_lettered = BTreeMap::new();
        let mut dead_ids = BTreeMap::<&String, usize>::new();
        for (id, reason) in &self.dead {
            *dead_lettered.entry(reason.clone()).or_insert(0) += 1;
            *dead_ids.entry(id).or_insert(0) += 1;
        }
        let duplicates = dead_ids
            .iter()
            .map(|(id, times)| times - 1 + usize::from(self.stored.contains(*id)))
            .sum();
        Row {
            scenario: scenario.to_owned(),
            published: self.published.len(),
            stored: self.stored.intersection(&self.published).count(),
            dead_lettered,
            lost: self.published.len() - self.accounted().len(),
            duplicates,
            good_not_stored: self.good.difference(&self.stored).count(),
            drain,
            peak_memory_mb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Vec<u8> {
        serde_json::to_vec(&lambdex_proto::Job::new(id, "https://example.com/a.jpg"))
            .expect("a job serialises")
    }

    #[test]
    fn every_message_is_stored_dead_lost_or_doubled() {
        let mut tally = Tally::default();
        for id in ["a", "b", "c", "d"] {
            tally.published(&job(id), id != "d");
        }
        tally.published(b"not json", false);
        tally.stored(["a".to_owned(), "b".to_owned()]);
        tally.dead_letter(&job("b"), "throttled".to_owned());
        tally.dead_letter(&job("d"), "fetch_status".to_owned());
        tally.dead_letter(b"not json", "invalid_message".to_owned());
        assert!(!tally.settled(), "c has no outcome");
        let row = tally.row("test", Duration::ZERO, 0);
        assert_eq!(row.published, 5);
        assert_eq!(row.stored, 2);
        assert_eq!(row.dead_total(), 3);
        assert_eq!(row.lost, 1);
        assert_eq!(row.duplicates, 1, "b stored and dead-lettered");
        assert_eq!(row.good_not_stored, 1, "c");
    }
}
