//! Writing one split as shards (`{split}-NNNNN.bin` tokens, `.mask` bytes) plus its document
//! index, into a staging folder.

use crate::error::{DataError, Result};
use crate::manifest::{self, Dtype, ShardInfo, ShardRange, SplitInfo};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct SplitWriter {
    dir: PathBuf,
    split: &'static str,
    dtype: Dtype,
    with_mask: bool,
    shard_tokens: u64,
    shards: Vec<ShardInfo>,
    cur: Option<(BufWriter<std::fs::File>, Option<BufWriter<std::fs::File>>)>,
    cur_len: u64,
    total: u64,
    doc_starts: Vec<u64>,
}

impl SplitWriter {
    pub fn new(
        dir: &Path,
        split: &'static str,
        dtype: Dtype,
        with_mask: bool,
        shard_tokens: u64,
    ) -> SplitWriter {
        SplitWriter {
            dir: dir.to_path_buf(),
            split,
            dtype,
            with_mask,
            shard_tokens: shard_tokens.max(1),
            shards: Vec::new(),
            cur: None,
            cur_len: 0,
            total: 0,
            doc_starts: Vec::new(),
        }
    }

    pub fn tokens(&self) -> u64 {
        self.total
    }
    pub fn documents(&self) -> u64 {
        self.doc_starts.len() as u64
    }

    fn create(&self, name: &str) -> Result<BufWriter<std::fs::File>> {
        let p = self.dir.join(name);
        let f = std::fs::File::create(&p).map_err(|e| DataError::io(&p, e))?;
        Ok(BufWriter::with_capacity(1 << 20, f))
    }

    fn open_shard(&mut self) -> Result<()> {
        let i = self.shards.len();
        let file = manifest::shard_name(self.split, i);
        let mask = self.with_mask.then(|| manifest::mask_name(self.split, i));
        let tw = self.create(&file)?;
        let mw = match &mask {
            Some(m) => Some(self.create(m)?),
            None => None,
        };
        self.shards.push(ShardInfo {
            file,
            mask,
            tokens: 0,
        });
        self.cur = Some((tw, mw));
        self.cur_len = 0;
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some((mut tw, mw)) = self.cur.take() {
            let dir = self.dir.clone();
            tw.flush().map_err(|e| DataError::io(&dir, e))?;
            if let Some(mut mw) = mw {
                mw.flush().map_err(|e| DataError::io(&dir, e))?;
            }
            if let Some(s) = self.shards.last_mut() {
                s.tokens = self.cur_len;
            }
        }
        Ok(())
    }

    /// Appends one document; returns the shard ranges it occupies.
    pub fn push_doc(&mut self, tokens: &[u32], mask: &[u8]) -> Result<Vec<ShardRange>> {
        self.doc_starts.push(self.total);
        let mut ranges = Vec::new();
        let mut done = 0usize;
        while done < tokens.len() {
            if self.cur.is_none() || self.cur_len >= self.shard_tokens {
                self.close_shard()?;
                self.open_shard()?;
            }
            let room = (self.shard_tokens - self.cur_len) as usize;
            let n = room.min(tokens.len() - done);
            let chunk = &tokens[done..done + n];
            let mut buf = Vec::with_capacity(n * self.dtype.bytes());
            for &t in chunk {
                match self.dtype {
                    Dtype::Uint16 => buf.extend_from_slice(&(t as u16).to_le_bytes()),
                    Dtype::Uint32 => buf.extend_from_slice(&t.to_le_bytes()),
                }
            }
            let shard = self.shards.len() - 1;
            let dir = self.dir.clone();
            if let Some((tw, mw)) = self.cur.as_mut() {
                tw.write_all(&buf).map_err(|e| DataError::io(&dir, e))?;
                if let Some(mw) = mw {
                    let m: Vec<u8> = if mask.is_empty() {
                        vec![1; n]
                    } else {
                        mask[done..done + n].to_vec()
                    };
                    mw.write_all(&m).map_err(|e| DataError::io(&dir, e))?;
                }
            }
            ranges.push(ShardRange {
                shard,
                start: self.cur_len,
                len: n as u64,
            });
            self.cur_len += n as u64;
            self.total += n as u64;
            done += n;
        }
        Ok(ranges)
    }

    /// Closes the last shard and writes the document index.
    pub fn finish(mut self) -> Result<SplitInfo> {
        self.close_shard()?;
        let index = manifest::index_name(self.split);
        let mut w = self.create(&index)?;
        let dir = self.dir.clone();
        for s in &self.doc_starts {
            w.write_all(&s.to_le_bytes())
                .map_err(|e| DataError::io(&dir, e))?;
        }
        w.flush().map_err(|e| DataError::io(&dir, e))?;
        Ok(SplitInfo {
            tokens: self.total,
            documents: self.doc_starts.len() as u64,
            index,
            shards: self.shards,
        })
    }
}
