//! Writing a response's questions and records with name compression (RFC 1035 §4.1.4) over the
//! whole message, however many names it holds. The codec compresses only a message's first 120
//! names and remembers only 64 of them; past that, owner names go out whole, and a large RRset
//! truncates (or fails over TCP) where Knot's answer fits. Names are remembered here by their
//! label sequence in a hash table, so a message of any size is written in linear time.
//!
//! Pointers are chosen as the codec chooses them, so messages within its limits come out the
//! same: each name's labels are looked up from the first; the first label sequence written
//! before (byte for byte) becomes a pointer; the sequences not found are remembered where they
//! start. Names in the data of CNAME, NS, PTR, MX and SOA are compressed (the types RFC 3597
//! §4 allows); the targets of SRV, SVCB and HTTPS are written whole and remembered (the
//! additional section's owners point into them).

use std::collections::HashMap;

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

/// Offsets a pointer can reach (14 bits), as the codec counts them.
const POINTER_REACH: usize = 0x3FFF;

/// A message being written: its bytes and the label sequences written so far.
#[derive(Default)]
pub(crate) struct Writer {
    pub out: Vec<u8>,
    /// Each label sequence (as written, uncompressed) and where it was first written.
    seen: HashMap<Box<[u8]>, u16>,
    /// The sequences remembered, in order, with where they start: taken back on a rewind.
    remembered: Vec<(usize, Box<[u8]>)>,
}

impl Writer {
    /// A writer whose message starts with `header` (12 bytes; counts are set by the caller).
    pub fn new(header: [u8; 12]) -> Self {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&header);
        Self {
            out,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Takes back everything written from `mark` on (and the names it remembered).
    pub fn rewind(&mut self, mark: usize) {
        self.out.truncate(mark);
        while let Some((at, _)) = self.remembered.last() {
            if *at < mark {
                break;
            }
            if let Some((_, sequence)) = self.remembered.pop() {
                self.seen.remove(&sequence);
            }
        }
    }

    pub fn query(&mut self, query: &Query) -> Option<()> {
        self.name(query.name())?;
        self.u16(u16::from(query.query_type()));
        self.u16(u16::from(query.query_class()));
        Some(())
    }

    /// Writes `record`; `None` when its data cannot be written (or is over 65,535 bytes).
    pub fn record(&mut self, record: &Record) -> Option<()> {
        self.name(&record.name)?;
        self.u16(u16::from(record.record_type()));
        self.u16(u16::from(record.dns_class));
        self.out.extend_from_slice(&record.ttl.to_be_bytes());
        let length_at = self.out.len();
        self.u16(0);
        let start = self.out.len();
        match &record.data {
            RData::CNAME(name) => self.name(&name.0)?,
            RData::NS(name) => self.name(&name.0)?,
            RData::PTR(name) => self.name(&name.0)?,
            RData::MX(mx) => {
                self.u16(mx.preference);
                self.name(&mx.exchange)?;
            }
            RData::SOA(soa) => {
                self.name(&soa.mname)?;
                self.name(&soa.rname)?;
                self.out.extend_from_slice(&soa.serial.to_be_bytes());
                for n in [soa.refresh, soa.retry, soa.expire] {
                    self.out.extend_from_slice(&n.to_be_bytes());
                }
                self.out.extend_from_slice(&soa.minimum.to_be_bytes());
            }
            other => {
                let mut data = Vec::new();
                let mut encoder = BinEncoder::new(&mut data);
                encoder.set_name_encoding(NameEncoding::Uncompressed);
                other.emit(&mut encoder).ok()?;
                self.out.extend_from_slice(&data);
                // A target written whole is remembered, for the names after it.
                let target = match other {
                    RData::SRV(_) => Some(6),
                    RData::SVCB(_) | RData::HTTPS(_) => Some(2),
                    _ => None,
                };
                if let Some(at) = target {
                    self.remember_whole(start + at);
                }
            }
        }
        let length = u16::try_from(self.out.len() - start).ok()?;
        self.out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
        Some(())
    }

    fn u16(&mut self, n: u16) {
        self.out.extend_from_slice(&n.to_be_bytes());
    }

    /// Writes `name`: its labels up to the first sequence written before, then a pointer to it
    /// (or whole, with its root label). `None` for a label over 63 bytes.
    fn name(&mut self, name: &Name) -> Option<()> {
        let mut starts = [0usize; 128];
        let mut count = 0;
        for label in name.iter() {
            let len = u8::try_from(label.len()).ok().filter(|&n| n <= 63)?;
            *starts.get_mut(count)? = self.out.len();
            count += 1;
            self.out.push(len);
            self.out.extend_from_slice(label);
        }
        let end = self.out.len();
        for &start in &starts[..count] {
            if let Some(&at) = self.seen.get(&self.out[start..end]) {
                self.out.truncate(start);
                self.u16(0xC000 | at);
                return Some(());
            }
            self.remember(start, end);
        }
        self.out.push(0);
        Some(())
    }

    /// Remembers the labels a name written whole at `at` holds (each sequence to its end).
    fn remember_whole(&mut self, at: usize) {
        let mut starts = Vec::new();
        let mut i = at;
        while let Some(&len) = self.out.get(i) {
            if len == 0 || len & 0xC0 != 0 {
                break;
            }
            starts.push(i);
            i += 1 + usize::from(len);
        }
        let end = i.min(self.out.len());
        for start in starts {
            self.remember(start, end);
        }
    }

    /// Remembers the label sequence `start..end` (unless one like it was), where pointers
    /// reach.
    fn remember(&mut self, start: usize, end: usize) {
        if end >= POINTER_REACH || start >= end {
            return;
        }
        let Ok(at) = u16::try_from(start) else {
            return;
        };
        let sequence: Box<[u8]> = self.out[start..end].into();
        if self.seen.contains_key(&sequence) {
            return;
        }
        self.seen.insert(sequence.clone(), at);
        self.remembered.push((start, sequence));
    }
}
