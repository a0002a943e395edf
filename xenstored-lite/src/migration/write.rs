//! The writer: bytes exactly as C xenstored writes them.

use alloc::vec::Vec;

use super::{
    ConnSpec, ConnectionData, Endian, NodeData, Quota, Record, RecordType, Stream, Version,
    WriteError, MAGIC,
};

/// Writes a stream: header, every record, `END`.
///
/// Each record's length field includes its zero padding to 8 octets, as C
/// writes it. Fails, without writing anything, if a value cannot be carried
/// by the format (a length too large for its field, a string with a NUL in
/// it, a version-2 record in a version-1 stream, …), so that whatever this
/// returns parses back to the same [`Stream`].
pub fn write(stream: &Stream) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&stream.header.version.number().to_be_bytes());
    let flags: u32 = match stream.header.endian {
        Endian::Little => 0,
        Endian::Big => 1,
    };
    out.extend_from_slice(&flags.to_be_bytes());
    for (index, record) in stream.records.iter().enumerate() {
        let mut w = Writer {
            body: Vec::new(),
            endian: stream.header.endian,
            index,
            record_type: record.record_type(),
        };
        w.record(record, stream.header.version)?;
        w.pad8();
        let len =
            u32::try_from(w.body.len()).map_err(|_| w.too_long("len", w.body.len(), u32::MAX))?;
        out.extend_from_slice(&w.u32_bytes(record.record_type().0));
        out.extend_from_slice(&w.u32_bytes(len));
        out.extend_from_slice(&w.body);
    }
    let end = Writer {
        body: Vec::new(),
        endian: stream.header.endian,
        index: stream.records.len(),
        record_type: RecordType::END,
    };
    out.extend_from_slice(&end.u32_bytes(RecordType::END.0));
    out.extend_from_slice(&end.u32_bytes(0));
    Ok(out)
}

struct Writer {
    body: Vec<u8>,
    endian: Endian,
    index: usize,
    record_type: RecordType,
}

impl Writer {
    fn too_long(&self, field: &'static str, len: usize, max: impl Into<u64>) -> WriteError {
        WriteError::TooLong {
            index: self.index,
            record_type: self.record_type,
            field,
            len,
            max: max.into(),
        }
    }

    fn bad(&self, field: &'static str, reason: &'static str) -> WriteError {
        WriteError::BadField {
            index: self.index,
            record_type: self.record_type,
            field,
            reason,
        }
    }

    fn u32_bytes(&self, v: u32) -> [u8; 4] {
        match self.endian {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }

    fn u8(&mut self, v: u8) {
        self.body.push(v);
    }

    fn u16(&mut self, v: u16) {
        let b = match self.endian {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        };
        self.body.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = self.u32_bytes(v);
        self.body.extend_from_slice(&b);
    }

    fn i32(&mut self, v: i32) {
        let b = match self.endian {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        };
        self.body.extend_from_slice(&b);
    }

    fn u64(&mut self, v: u64) {
        let b = match self.endian {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        };
        self.body.extend_from_slice(&b);
    }

    fn pad8(&mut self) {
        while self.body.len() % 8 != 0 {
            self.body.push(0);
        }
    }

    /// The `-len` of a string written with its NUL terminator.
    fn cstr_len(&self, s: &[u8], field: &'static str) -> Result<u16, WriteError> {
        if s.contains(&0) {
            return Err(self.bad(field, "contains NUL"));
        }
        u16::try_from(s.len() + 1).map_err(|_| self.too_long(field, s.len() + 1, u16::MAX))
    }

    fn cstr(&mut self, s: &[u8]) {
        self.body.extend_from_slice(s);
        self.body.push(0);
    }

    fn conn_id(&mut self, id: u32) -> Result<(), WriteError> {
        if id == 0 {
            return Err(self.bad("conn-id", "connection id 0 is reserved"));
        }
        self.u32(id);
        Ok(())
    }

    fn record(&mut self, record: &Record, version: Version) -> Result<(), WriteError> {
        match record {
            Record::Global(g) => {
                self.i32(g.rw_socket_fd);
                self.i32(g.evtchn_fd);
            }
            Record::Connection(c) => self.connection(c)?,
            Record::Watch(w) => {
                let wpath_len = self.cstr_len(w.wpath.as_bytes(), "wpath")?;
                let token_len = self.cstr_len(&w.token, "token")?;
                self.conn_id(w.conn_id)?;
                self.u16(wpath_len);
                self.u16(token_len);
                self.cstr(w.wpath.as_bytes());
                self.cstr(&w.token);
            }
            Record::WatchExtended(w) => {
                if version == Version::V1 {
                    return Err(WriteError::NotInVersion {
                        index: self.index,
                        record_type: self.record_type,
                        field: "record",
                        version: 1,
                    });
                }
                let wpath_len = self.cstr_len(w.wpath.as_bytes(), "wpath")?;
                let token_len = self.cstr_len(&w.token, "token")?;
                self.conn_id(w.conn_id)?;
                self.u16(wpath_len);
                self.u16(token_len);
                self.u16(w.depth);
                self.u16(0);
                self.cstr(w.wpath.as_bytes());
                self.cstr(&w.token);
            }
            Record::Transaction(t) => {
                self.conn_id(t.conn_id)?;
                self.u32(t.tx_id);
            }
            Record::Node(n) => self.node(n)?,
            Record::GlobalQuota(q) => {
                let n_dom = u16::try_from(q.dom_quota.len())
                    .map_err(|_| self.too_long("n-dom-quota", q.dom_quota.len(), u16::MAX))?;
                let n_glob = u16::try_from(q.glob_quota.len())
                    .map_err(|_| self.too_long("n-glob-quota", q.glob_quota.len(), u16::MAX))?;
                self.u16(n_dom);
                self.u16(n_glob);
                self.quotas(q.dom_quota.iter().chain(&q.glob_quota))?;
            }
            Record::Domain(d) => {
                if version == Version::V1 && d.features != 0 {
                    return Err(WriteError::NotInVersion {
                        index: self.index,
                        record_type: self.record_type,
                        field: "features",
                        version: 1,
                    });
                }
                let n = u16::try_from(d.quota.len())
                    .map_err(|_| self.too_long("n-quota", d.quota.len(), u16::MAX))?;
                self.u16(d.domain_id);
                self.u16(n);
                self.u32(d.features);
                self.quotas(d.quota.iter())?;
            }
        }
        Ok(())
    }

    fn connection(&mut self, c: &ConnectionData) -> Result<(), WriteError> {
        let in_len = u16::try_from(c.in_data.len())
            .map_err(|_| self.too_long("in-data-len", c.in_data.len(), u16::MAX))?;
        let out_len = u32::try_from(c.out_data.len())
            .map_err(|_| self.too_long("out-data-len", c.out_data.len(), u32::MAX))?;
        if usize::from(c.out_resp_len) > c.out_data.len() {
            return Err(self.bad("out-resp-len", "exceeds out-data-len"));
        }
        if c.ring.is_some() && !matches!(c.spec, ConnSpec::Ring(_)) {
            return Err(self.bad("fields", "ring mfn/port on a socket connection"));
        }
        self.conn_id(c.conn_id)?;
        self.u16(c.spec.conn_type());
        self.u16(c.fields());
        match c.spec {
            ConnSpec::Ring(r) => {
                self.u16(r.domid);
                self.u16(r.tdomid);
                self.u32(r.evtchn);
            }
            ConnSpec::Socket(s) => {
                self.i32(s.socket_fd);
                self.u32(0);
            }
        }
        self.u16(in_len);
        self.u16(c.out_resp_len);
        self.u32(out_len);
        self.body.extend_from_slice(&c.in_data);
        self.body.extend_from_slice(&c.out_data);
        if let Some(id) = c.unique_id {
            self.pad8();
            self.u64(id);
        }
        if let Some(ring) = c.ring {
            self.pad8();
            self.u64(ring.mfn);
            self.u32(ring.remote_port);
            self.u32(0);
        }
        Ok(())
    }

    fn node(&mut self, n: &NodeData) -> Result<(), WriteError> {
        let path_len = self.cstr_len(n.path.as_bytes(), "path")?;
        let value_len = u16::try_from(n.value.len())
            .map_err(|_| self.too_long("value-len", n.value.len(), u16::MAX))?;
        let perm_count = u16::try_from(n.perms.len())
            .map_err(|_| self.too_long("perm-count", n.perms.len(), u16::MAX))?;
        self.u32(n.conn_id);
        self.u32(n.tx_id);
        self.u16(path_len);
        self.u16(value_len);
        self.u16(n.access.bits());
        self.u16(perm_count);
        for p in &n.perms {
            self.u8(p.perm.kind.letter());
            self.u8(p.flags);
            self.u16(p.perm.domid);
        }
        self.cstr(n.path.as_bytes());
        self.body.extend_from_slice(&n.value);
        Ok(())
    }

    fn quotas<'q>(
        &mut self,
        quotas: impl Iterator<Item = &'q Quota> + Clone,
    ) -> Result<(), WriteError> {
        for q in quotas.clone() {
            if q.name.is_empty() {
                return Err(self.bad("quota-names", "empty quota name"));
            }
            if q.name.as_bytes().contains(&0) {
                return Err(self.bad("quota-names", "contains NUL"));
            }
            self.u32(q.value);
        }
        for q in quotas {
            self.cstr(q.name.as_bytes());
        }
        Ok(())
    }
}
