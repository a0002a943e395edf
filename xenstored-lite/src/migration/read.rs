//! The strict parser.
//!
//! Every length is checked against the bytes actually present before
//! anything is copied, so allocation is bounded by the input's size.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use xenring::{Perm, PermKind};

use super::{
    Access, ConnSpec, ConnectionData, DomainData, Endian, GlobalData, GlobalQuotaData, Header,
    MigrationError, NodeData, NodePerm, Quota, Record, RecordType, RingConn, RingLocation,
    SocketConn, Stream, TransactionData, Version, WatchData, WatchDataExtended,
    FIELD_RING_MFN_PORT, FIELD_UNIQUE_ID, KNOWN_FIELDS, MAGIC,
};

/// Parses a whole stream: header, records, `END`, nothing after it.
///
/// The input is untrusted: any defect is reported as a [`MigrationError`]
/// naming the record and field; this never panics.
pub fn parse(input: &[u8]) -> Result<Stream, MigrationError> {
    let header = parse_header(input)?;
    let mut records = Vec::new();
    let mut pos = 16usize;
    let mut index = 0usize;
    loop {
        let rest = input.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            return Err(MigrationError::MissingEnd);
        }
        let (Some(type_bytes), Some(len_bytes)) = (rest.get(0..4), rest.get(4..8)) else {
            return Err(MigrationError::RecordHeaderTruncated {
                index,
                have: rest.len(),
            });
        };
        let record_type = RecordType(u32_from(header.endian, type_bytes));
        let len = u32_from(header.endian, len_bytes);
        if len % 8 != 0 {
            return Err(MigrationError::LengthNotAligned {
                index,
                record_type,
                len,
            });
        }
        let after_header = rest.get(8..).unwrap_or_default();
        let body = usize::try_from(len)
            .ok()
            .and_then(|len| after_header.get(..len))
            .ok_or(MigrationError::RecordTruncated {
                index,
                record_type,
                need: u64::from(len),
                have: after_header.len(),
            })?;
        let mut body = Body {
            data: body,
            pos: 0,
            endian: header.endian,
            index,
            record_type,
        };
        let record = match record_type {
            RecordType::END => {
                body.finish()?;
                let trailing = after_header.len() - body.data.len();
                if trailing != 0 {
                    return Err(MigrationError::TrailingData {
                        index,
                        bytes: trailing,
                    });
                }
                check_structure(&records)?;
                return Ok(Stream { header, records });
            }
            RecordType::GLOBAL_DATA => Record::Global(GlobalData {
                rw_socket_fd: body.i32("rw-socket-fd")?,
                evtchn_fd: body.i32("evtchn-fd")?,
            }),
            RecordType::CONNECTION_DATA => Record::Connection(body.connection()?),
            RecordType::WATCH_DATA => {
                let conn_id = body.conn_id()?;
                let wpath_len = body.u16("wpath-len")?;
                let token_len = body.u16("token-len")?;
                let wpath = body.path(wpath_len, "wpath")?;
                let token = body.cstr(token_len, "token")?.to_vec();
                Record::Watch(WatchData {
                    conn_id,
                    wpath,
                    token,
                })
            }
            RecordType::WATCH_DATA_EXTENDED => {
                if header.version == Version::V1 {
                    return Err(MigrationError::RecordNotInVersion {
                        index,
                        record_type,
                        version: 1,
                    });
                }
                let conn_id = body.conn_id()?;
                let wpath_len = body.u16("wpath-len")?;
                let token_len = body.u16("token-len")?;
                let depth = body.u16("depth")?;
                body.skip(2, "pad")?;
                let wpath = body.path(wpath_len, "wpath")?;
                let token = body.cstr(token_len, "token")?.to_vec();
                Record::WatchExtended(WatchDataExtended {
                    conn_id,
                    wpath,
                    token,
                    depth,
                })
            }
            RecordType::TRANSACTION_DATA => Record::Transaction(TransactionData {
                conn_id: body.conn_id()?,
                tx_id: body.u32("tx-id")?,
            }),
            RecordType::NODE_DATA => Record::Node(body.node()?),
            RecordType::GLOBAL_QUOTA_DATA => {
                let n_dom = body.u16("n-dom-quota")?;
                let n_glob = body.u16("n-glob-quota")?;
                let mut all = body.quotas(usize::from(n_dom) + usize::from(n_glob))?;
                let glob_quota = all.split_off(usize::from(n_dom));
                Record::GlobalQuota(GlobalQuotaData {
                    dom_quota: all,
                    glob_quota,
                })
            }
            RecordType::DOMAIN_DATA => {
                let domain_id = body.u16("domain-id")?;
                let n_quota = body.u16("n-quota")?;
                let features = body.u32("features")?;
                // Not valid in version 1: written as zero, ignored on read.
                let features = match header.version {
                    Version::V1 => 0,
                    Version::V2 => features,
                };
                let quota = body.quotas(usize::from(n_quota))?;
                Record::Domain(DomainData {
                    domain_id,
                    features,
                    quota,
                })
            }
            _ => {
                return Err(MigrationError::UnknownRecordType { index, record_type });
            }
        };
        body.finish()?;
        records.push(record);
        pos = pos.saturating_add(8).saturating_add(body.data.len());
        index += 1;
    }
}

fn parse_header(input: &[u8]) -> Result<Header, MigrationError> {
    let (Some(ident), Some(version), Some(flags)) =
        (input.get(0..8), input.get(8..12), input.get(12..16))
    else {
        return Err(MigrationError::HeaderTruncated { have: input.len() });
    };
    if ident != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(ident);
        return Err(MigrationError::BadMagic { found });
    }
    let version = u32_from(Endian::Big, version);
    let version =
        Version::from_number(version).ok_or(MigrationError::UnsupportedVersion { version })?;
    let flags = u32_from(Endian::Big, flags);
    if flags & !1 != 0 {
        return Err(MigrationError::BadHeaderFlags { flags });
    }
    let endian = if flags & 1 == 0 {
        Endian::Little
    } else {
        Endian::Big
    };
    Ok(Header { version, endian })
}

/// Reads a `u32` from exactly four octets (callers slice with `get(a..a+4)`).
fn u32_from(endian: Endian, b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    match endian {
        Endian::Little => u32::from_le_bytes(a),
        Endian::Big => u32::from_be_bytes(a),
    }
}

/// A cursor over one record body.
struct Body<'a> {
    data: &'a [u8],
    pos: usize,
    endian: Endian,
    index: usize,
    record_type: RecordType,
}

impl<'a> Body<'a> {
    fn bad(&self, field: &'static str, reason: impl Into<String>) -> MigrationError {
        MigrationError::BadField {
            index: self.index,
            record_type: self.record_type,
            field,
            reason: reason.into(),
        }
    }

    /// The next `n` octets.
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], MigrationError> {
        let short = || MigrationError::BodyTooShort {
            index: self.index,
            record_type: self.record_type,
            field,
            need: u64::try_from(self.pos)
                .unwrap_or(u64::MAX)
                .saturating_add(u64::try_from(n).unwrap_or(u64::MAX)),
            have: self.data.len(),
        };
        let end = self.pos.checked_add(n).ok_or_else(short)?;
        let bytes = self.data.get(self.pos..end).ok_or_else(short)?;
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], MigrationError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn skip(&mut self, n: usize, field: &'static str) -> Result<(), MigrationError> {
        self.take(n, field).map(|_| ())
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, MigrationError> {
        Ok(self.take_array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, MigrationError> {
        let a = self.take_array(field)?;
        Ok(match self.endian {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        })
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, MigrationError> {
        let a = self.take_array(field)?;
        Ok(match self.endian {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        })
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, MigrationError> {
        let a = self.take_array(field)?;
        Ok(match self.endian {
            Endian::Little => i32::from_le_bytes(a),
            Endian::Big => i32::from_be_bytes(a),
        })
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, MigrationError> {
        let a = self.take_array(field)?;
        Ok(match self.endian {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        })
    }

    /// Skips padding to the next 8-octet boundary of the body.
    fn align8(&mut self, field: &'static str) -> Result<(), MigrationError> {
        let pad = (8 - self.pos % 8) % 8;
        self.skip(pad, field)
    }

    /// A non-zero `conn-id`.
    fn conn_id(&mut self) -> Result<u32, MigrationError> {
        let id = self.u32("conn-id")?;
        if id == 0 {
            return Err(self.bad("conn-id", "connection id 0 is reserved"));
        }
        Ok(id)
    }

    /// A NUL-terminated string of `len` octets including the NUL, returned
    /// without it.
    fn cstr(&mut self, len: u16, field: &'static str) -> Result<&'a [u8], MigrationError> {
        let bytes = self.take(usize::from(len), field)?;
        let Some((&last, text)) = bytes.split_last() else {
            return Err(self.bad(field, "length 0: no NUL terminator"));
        };
        if last != 0 {
            return Err(self.bad(field, "missing NUL terminator"));
        }
        if text.contains(&0) {
            return Err(self.bad(field, "embedded NUL"));
        }
        Ok(text)
    }

    /// A NUL-terminated UTF-8 path.
    fn path(&mut self, len: u16, field: &'static str) -> Result<String, MigrationError> {
        let text = self.cstr(len, field)?;
        match core::str::from_utf8(text) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.bad(field, "not UTF-8")),
        }
    }

    /// The rest of `CONNECTION_DATA` after the record header.
    fn connection(&mut self) -> Result<ConnectionData, MigrationError> {
        let conn_id = self.conn_id()?;
        let conn_type = self.u16("conn-type")?;
        let fields = self.u16("fields")?;
        if fields & !KNOWN_FIELDS != 0 {
            return Err(self.bad("fields", format!("unknown bits {fields:#06x}")));
        }
        let spec = match conn_type {
            0 => ConnSpec::Ring(RingConn {
                domid: self.u16("domid")?,
                tdomid: self.u16("tdomid")?,
                evtchn: self.u32("evtchn")?,
            }),
            1 => {
                let socket_fd = self.i32("socket-fd")?;
                self.skip(4, "pad")?;
                ConnSpec::Socket(SocketConn { socket_fd })
            }
            other => {
                return Err(self.bad("conn-type", format!("unknown connection type {other}")));
            }
        };
        if fields & FIELD_RING_MFN_PORT != 0 && conn_type != 0 {
            return Err(self.bad("fields", "ring mfn/port on a socket connection"));
        }
        let in_len = self.u16("in-data-len")?;
        let out_resp_len = self.u16("out-resp-len")?;
        let out_len = self.u32("out-data-len")?;
        if u32::from(out_resp_len) > out_len {
            return Err(self.bad(
                "out-resp-len",
                format!("{out_resp_len} exceeds out-data-len {out_len}"),
            ));
        }
        let in_data = self.take(usize::from(in_len), "data")?.to_vec();
        let out_len =
            usize::try_from(out_len).map_err(|_| self.bad("out-data-len", "too large"))?;
        let out_data = self.take(out_len, "data")?.to_vec();
        let unique_id = if fields & FIELD_UNIQUE_ID != 0 {
            self.align8("unique-id")?;
            Some(self.u64("unique-id")?)
        } else {
            None
        };
        let ring = if fields & FIELD_RING_MFN_PORT != 0 {
            self.align8("mfn")?;
            let mfn = self.u64("mfn")?;
            let remote_port = self.u32("remote-port")?;
            self.skip(4, "pad")?;
            Some(RingLocation { mfn, remote_port })
        } else {
            None
        };
        Ok(ConnectionData {
            conn_id,
            spec,
            in_data,
            out_resp_len,
            out_data,
            unique_id,
            ring,
        })
    }

    /// The rest of `NODE_DATA`.
    fn node(&mut self) -> Result<NodeData, MigrationError> {
        let conn_id = self.u32("conn-id")?;
        let tx_id = self.u32("tx-id")?;
        let path_len = self.u16("path-len")?;
        let value_len = self.u16("value-len")?;
        let access_bits = self.u16("access")?;
        let access = Access::from_bits(access_bits)
            .ok_or_else(|| self.bad("access", format!("unknown bits {access_bits:#06x}")))?;
        let perm_count = usize::from(self.u16("perm-count")?);
        // Check the whole list fits before allocating for it.
        let list_len = perm_count * 4;
        if self.data.len().saturating_sub(self.pos) < list_len {
            self.take(list_len, "perm")?;
        }
        let mut perms = Vec::with_capacity(perm_count);
        for n in 0..perm_count {
            let letter = self.u8("perm")?;
            let flags = self.u8("perm")?;
            let domid = self.u16("perm")?;
            let kind = PermKind::from_letter(letter).ok_or_else(|| {
                self.bad(
                    "perm",
                    format!("entry {}: unknown permission letter {letter:#04x}", n + 1),
                )
            })?;
            perms.push(NodePerm {
                perm: Perm::new(kind, domid),
                flags,
            });
        }
        let path = self.path(path_len, "path")?;
        let value = self.take(usize::from(value_len), "value")?.to_vec();
        Ok(NodeData {
            conn_id,
            tx_id,
            access,
            perms,
            path,
            value,
        })
    }

    /// `n` quota values, then `n` NUL-terminated names.
    fn quotas(&mut self, n: usize) -> Result<Vec<Quota>, MigrationError> {
        let vals_len = n * 4;
        if self.data.len().saturating_sub(self.pos) < vals_len {
            self.take(vals_len, "quota-val")?;
        }
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(self.u32("quota-val")?);
        }
        let mut quotas = Vec::with_capacity(n);
        for value in values {
            let rest = self.data.get(self.pos..).unwrap_or_default();
            let Some(nul) = rest.iter().position(|&b| b == 0) else {
                return Err(self.bad("quota-names", "name without NUL terminator"));
            };
            let raw = self.take(nul + 1, "quota-names")?;
            let name = raw.get(..nul).unwrap_or_default();
            if name.is_empty() {
                return Err(self.bad("quota-names", "empty quota name"));
            }
            let Ok(name) = core::str::from_utf8(name) else {
                return Err(self.bad("quota-names", "not UTF-8"));
            };
            quotas.push(Quota {
                name: name.to_owned(),
                value,
            });
        }
        Ok(quotas)
    }

    /// Checks that only padding (fewer than 8 octets) is left.
    fn finish(&self) -> Result<(), MigrationError> {
        if self.data.len() - self.pos >= 8 {
            return Err(MigrationError::ExcessLength {
                index: self.index,
                record_type: self.record_type,
                len: self.data.len(),
                used: self.pos,
            });
        }
        Ok(())
    }
}

/// Checks what no single record shows: one `GLOBAL_DATA` at most, each
/// connection id once, and no descriptor named twice (a restore takes each
/// descriptor over once; two owners would close it twice).
pub(crate) fn check_structure(records: &[Record]) -> Result<(), MigrationError> {
    let mut ids = BTreeSet::new();
    let mut fds = BTreeSet::new();
    let mut globals = 0;
    let bad = |index: usize, record_type, field, reason: String| MigrationError::BadField {
        index,
        record_type,
        field,
        reason,
    };
    for (index, record) in records.iter().enumerate() {
        match record {
            Record::Global(g) => {
                globals += 1;
                if globals > 1 {
                    return Err(bad(
                        index,
                        RecordType::GLOBAL_DATA,
                        "record",
                        "a second GLOBAL_DATA record".into(),
                    ));
                }
                for (field, fd) in [("rw-socket-fd", g.rw_socket_fd), ("evtchn-fd", g.evtchn_fd)] {
                    if fd >= 0 && !fds.insert(fd) {
                        return Err(bad(
                            index,
                            RecordType::GLOBAL_DATA,
                            field,
                            format!("descriptor {fd} is named twice"),
                        ));
                    }
                }
            }
            Record::Connection(c) => {
                if !ids.insert(c.conn_id) {
                    return Err(bad(
                        index,
                        RecordType::CONNECTION_DATA,
                        "conn-id",
                        format!("connection {} appears twice", c.conn_id),
                    ));
                }
                if let ConnSpec::Socket(s) = &c.spec {
                    if s.socket_fd >= 0 && !fds.insert(s.socket_fd) {
                        return Err(bad(
                            index,
                            RecordType::CONNECTION_DATA,
                            "socket-fd",
                            format!("descriptor {} is named twice", s.socket_fd),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
