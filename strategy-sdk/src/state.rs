//! A small binary codec for `snapshot()` / `restore()`.
//!
//! Strategies write a version byte first and read it back, so that a newer
//! build can refuse (or migrate) an older layout instead of misreading it.

use std::fmt;

/// A snapshot that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snapshot: {}", self.0)
    }
}

impl std::error::Error for StateError {}

impl From<StateError> for String {
    fn from(e: StateError) -> Self {
        e.to_string()
    }
}

/// Appends values to a snapshot.
#[derive(Debug, Default)]
pub struct StateWriter {
    bytes: Vec<u8>,
}

impl StateWriter {
    /// An empty snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    /// Append a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append an i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append an f64, bit for bit.
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.u64(v.to_bits())
    }

    /// Append a bool.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Append an optional f64.
    pub fn opt_f64(&mut self, v: Option<f64>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(x) => self.u8(1).f64(x),
        }
    }

    /// Append a string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.u64(v.len() as u64);
        self.bytes.extend_from_slice(v.as_bytes());
        self
    }

    /// Append a list of f64.
    pub fn f64s(&mut self, v: &[f64]) -> &mut Self {
        self.u64(v.len() as u64);
        for x in v {
            self.f64(*x);
        }
        self
    }

    /// The finished snapshot.
    #[must_use]
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads values back in the order they were written.
#[derive(Debug)]
pub struct StateReader<'a> {
    bytes: &'a [u8],
}

impl<'a> StateReader<'a> {
    /// Read `bytes`.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or_else(|| StateError("truncated".into()))?;
        self.bytes = rest;
        Ok(*head)
    }

    /// Read a byte.
    pub fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take::<1>()?[0])
    }

    /// Read a u64.
    pub fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    /// Read an i64.
    pub fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    /// Read an f64.
    pub fn f64(&mut self) -> Result<f64, StateError> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// Read a bool.
    pub fn bool(&mut self) -> Result<bool, StateError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(StateError(format!("bad bool byte {other}"))),
        }
    }

    /// Read an optional f64.
    pub fn opt_f64(&mut self) -> Result<Option<f64>, StateError> {
        Ok(if self.bool()? {
            Some(self.f64()?)
        } else {
            None
        })
    }

    fn len(&mut self, item_size: usize) -> Result<usize, StateError> {
        let n = usize::try_from(self.u64()?).map_err(|_| StateError("length overflows".into()))?;
        if n.saturating_mul(item_size) > self.bytes.len() {
            return Err(StateError(format!(
                "length {n} exceeds the remaining {} bytes",
                self.bytes.len()
            )));
        }
        Ok(n)
    }

    /// Read a string.
    pub fn str(&mut self) -> Result<String, StateError> {
        let n = self.len(1)?;
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        String::from_utf8(head.to_vec()).map_err(|_| StateError("string is not UTF-8".into()))
    }

    /// Read a list of f64.
    pub fn f64s(&mut self) -> Result<Vec<f64>, StateError> {
        let n = self.len(8)?;
        (0..n).map(|_| self.f64()).collect()
    }

    /// Check that a version byte matches.
    pub fn version(&mut self, expected: u8) -> Result<(), StateError> {
        match self.u8()? {
            v if v == expected => Ok(()),
            v => Err(StateError(format!(
                "layout version {v}, this build reads {expected}"
            ))),
        }
    }

    /// Fail unless every byte was read.
    pub fn finish(self) -> Result<(), StateError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(StateError(format!("{} trailing bytes", self.bytes.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut w = StateWriter::new();
        w.u8(3)
            .i64(-5)
            .f64(1.25)
            .opt_f64(None)
            .opt_f64(Some(2.5))
            .str("NIFTY")
            .f64s(&[1.0, 2.0])
            .bool(true);
        let bytes = w.finish();
        let mut r = StateReader::new(&bytes);
        r.version(3).unwrap();
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.f64().unwrap(), 1.25);
        assert_eq!(r.opt_f64().unwrap(), None);
        assert_eq!(r.opt_f64().unwrap(), Some(2.5));
        assert_eq!(r.str().unwrap(), "NIFTY");
        assert_eq!(r.f64s().unwrap(), vec![1.0, 2.0]);
        assert!(r.bool().unwrap());
        r.finish().unwrap();

        // Truncated anywhere, or a wrong version: an error, never a panic.
        for cut in 0..bytes.len() {
            let mut r = StateReader::new(&bytes[..cut]);
            let res = (|| -> Result<(), StateError> {
                r.version(3)?;
                r.i64()?;
                r.f64()?;
                r.opt_f64()?;
                r.opt_f64()?;
                r.str()?;
                r.f64s()?;
                r.bool()?;
                Ok(())
            })();
            assert!(res.is_err(), "cut at {cut}");
        }
        assert!(StateReader::new(&bytes).version(4).is_err());
        // A huge length prefix must not allocate or panic.
        let mut w = StateWriter::new();
        w.u64(u64::MAX);
        assert!(StateReader::new(&w.finish()).f64s().is_err());
    }
}
