//! record — tagged records, so that a demo can prove that what it sent arrived, once.
//!
//! A demo that moves data through a pipe, a FIFO or a queue does not print "it worked":
//! every record carries its writer, its sequence number and a checksum, and the reader
//! keeps a [`Ledger`] that counts what arrived, what arrived twice, what never arrived,
//! and what arrived torn (bytes of another record in the middle, so the checksum fails).
//!
//! Layout, little-endian: magic `PLRC` (4 bytes), writer (u32), sequence (u64), payload
//! length (u32), payload, FNV-1a checksum of everything before it (u64). The payload is
//! lowercase letters, so the magic (uppercase) never appears inside one: after a torn
//! record the [`Decoder`] finds the next one by scanning for the magic.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

const MAGIC: [u8; 4] = *b"PLRC";
const HEADER: usize = 4 + 4 + 8 + 4;
const CHECKSUM: usize = 8;

/// The smallest record: a header, no payload, a checksum.
pub const MIN_SIZE: usize = HEADER + CHECKSUM;

/// The tag that identifies a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tag {
    /// Which writer sent it.
    pub writer: u32,
    /// Its place in that writer's sequence, from 0.
    pub seq: u64,
}

/// Encodes record `tag` as exactly `size` bytes (at least [`MIN_SIZE`]).
pub fn encode(tag: Tag, size: usize) -> Vec<u8> {
    assert!(size >= MIN_SIZE, "a record takes at least {MIN_SIZE} bytes");
    let payload = size - MIN_SIZE;
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&tag.writer.to_le_bytes());
    bytes.extend_from_slice(&tag.seq.to_le_bytes());
    bytes.extend_from_slice(&(payload as u32).to_le_bytes());
    let letter = b'a' + (tag.writer % 26) as u8;
    bytes.resize(HEADER + payload, letter);
    let checksum = fnv1a(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the decoder found in the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// A whole record, checksum correct, `size` bytes long.
    Record(Tag, usize),
    /// A record whose header was read but whose checksum failed: other bytes got inside.
    Torn(Tag, usize),
}

/// Turns a byte stream, fed in pieces as `read` returns them, back into records.
#[derive(Default)]
pub struct Decoder {
    pending: Vec<u8>,
    /// Bytes skipped while looking for the next record after a torn one.
    pub skipped: u64,
}

impl Decoder {
    /// Adds bytes and returns every record they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Found> {
        self.pending.extend_from_slice(bytes);
        let mut found = Vec::new();
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            if rest.len() < HEADER {
                break;
            }
            if rest[..4] != MAGIC {
                let next = rest[1..]
                    .windows(4)
                    .position(|w| w == MAGIC)
                    .map_or(rest.len() - 3, |p| p + 1);
                self.skipped += next as u64;
                at += next;
                continue;
            }
            let writer = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
            let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
            let payload = u32::from_le_bytes(rest[16..20].try_into().expect("4 bytes")) as usize;
            let size = MIN_SIZE + payload;
            if rest.len() < size {
                break;
            }
            let checksum =
                u64::from_le_bytes(rest[size - CHECKSUM..size].try_into().expect("8 bytes"));
            let tag = Tag { writer, seq };
            if checksum == fnv1a(&rest[..size - CHECKSUM]) {
                found.push(Found::Record(tag, size));
                at += size;
            } else {
                found.push(Found::Torn(tag, size));
                at += 1; // resynchronize: a whole record may sit inside the torn one
            }
        }
        self.pending.drain(..at);
        found
    }

    /// Bytes left over that do not make a whole record (0 for a clean stream).
    pub fn leftover(&self) -> usize {
        self.pending.len()
    }
}

/// The reader's account of what arrived.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    counts: HashMap<Tag, u32>,
    last_seq: BTreeMap<u32, u64>,
    /// Records that arrived torn.
    pub torn: u64,
    /// False once a writer's record arrived after a later one of the same writer.
    pub in_order: bool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger {
            in_order: true,
            ..Ledger::default()
        }
    }

    /// Notes what the decoder found.
    pub fn note(&mut self, found: &Found) {
        match *found {
            Found::Record(tag, _) => {
                *self.counts.entry(tag).or_default() += 1;
                if let Some(&last) = self.last_seq.get(&tag.writer)
                    && tag.seq <= last
                {
                    self.in_order = false;
                }
                self.last_seq.insert(tag.writer, tag.seq);
            }
            Found::Torn(..) => self.torn += 1,
        }
    }

    /// How many whole copies of `tag` arrived.
    pub fn copies(&self, tag: Tag) -> u32 {
        self.counts.get(&tag).copied().unwrap_or(0)
    }

    /// Compares with what was sent: `sent[w]` records from writer `w`, numbered from 0.
    pub fn check(&self, sent: &[u64]) -> Tally {
        let mut tally = Tally {
            sent: sent.iter().sum(),
            torn: self.torn,
            in_order: self.in_order,
            ..Tally::default()
        };
        for (&tag, &count) in &self.counts {
            let expected = sent.get(tag.writer as usize).is_some_and(|&n| tag.seq < n);
            if expected {
                tally.received += 1;
                tally.duplicates += u64::from(count - 1);
            } else {
                tally.unexpected += u64::from(count);
            }
        }
        tally.missing = tally.sent - tally.received;
        tally
    }
}

/// What a reader proved: every field is a count of records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Records the writers sent.
    pub sent: u64,
    /// Distinct records that arrived whole.
    pub received: u64,
    /// Extra copies of records that had already arrived.
    pub duplicates: u64,
    /// Records sent that never arrived whole.
    pub missing: u64,
    /// Records that arrived torn.
    pub torn: u64,
    /// Records that no writer sent (a corrupted tag).
    pub unexpected: u64,
    /// Every writer's records arrived in the order it sent them.
    pub in_order: bool,
}

impl Tally {
    /// Everything arrived exactly once, whole.
    pub fn exactly_once(&self) -> bool {
        self.received == self.sent
            && self.duplicates == 0
            && self.missing == 0
            && self.unexpected == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(writer: u32, seq: u64) -> Tag {
        Tag { writer, seq }
    }

    #[test]
    fn records_survive_any_split_of_the_stream() {
        let stream: Vec<u8> = (0..10)
            .flat_map(|seq| encode(tag(1, seq), 64 + seq as usize))
            .collect();
        let mut decoder = Decoder::default();
        let mut ledger = Ledger::new();
        for piece in stream.chunks(7) {
            decoder
                .feed(piece)
                .iter()
                .for_each(|found| ledger.note(found));
        }
        let tally = ledger.check(&[0, 10]);
        assert!(tally.exactly_once(), "{tally:?}");
        assert!(tally.in_order);
        assert_eq!(decoder.leftover(), 0);
    }

    #[test]
    fn a_record_inside_a_torn_one_is_still_found() {
        let big = encode(tag(0, 0), 200);
        let small = encode(tag(1, 0), 40);
        let mut stream = big[..100].to_vec();
        stream.extend_from_slice(&small);
        stream.extend_from_slice(&big[100..]);
        let mut decoder = Decoder::default();
        let found = decoder.feed(&stream);
        assert_eq!(found[0], Found::Torn(tag(0, 0), 200));
        assert!(found.contains(&Found::Record(tag(1, 0), 40)));
        let mut ledger = Ledger::new();
        found.iter().for_each(|f| ledger.note(f));
        let tally = ledger.check(&[1, 1]);
        assert_eq!((tally.received, tally.torn, tally.missing), (1, 1, 1));
    }

    #[test]
    fn duplicates_and_disorder_are_counted() {
        let mut ledger = Ledger::new();
        for seq in [0, 2, 1, 2] {
            ledger.note(&Found::Record(tag(0, seq), MIN_SIZE));
        }
        let tally = ledger.check(&[4]);
        assert_eq!((tally.received, tally.duplicates, tally.missing), (3, 1, 1));
        assert!(!tally.in_order);
    }
}
