//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): the
//! values and names of an enum (`skb_drop_reason`) and the byte offset of a
//! struct member path (`sk_buff.dev`, `net.ns.inum`), looking through
//! anonymous structs and unions and typedefs.
//!
//! Hand-written because neither crate in reach fits: `btf-rs` is
//! LGPL-2.1-or-later (flowd is MIT OR Apache-2.0), and aya-obj 0.3's `Btf`
//! parses the same data but keeps its type lookup (`type_by_id`, `types`)
//! crate-private. The format is the kernel's `Documentation/bpf/btf.rst`:
//! a header, a type section and a string section; only the parts needed to
//! walk the type section are decoded here.

use std::collections::BTreeMap;

use thiserror::Error;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// What was wrong with the BTF data or the lookup.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("BTF data: {0}")]
    Format(String),
    #[error("BTF has no {kind} named `{name}`")]
    NotFound { kind: &'static str, name: String },
    #[error("BTF: struct `{strukt}` has no member path `{path}`")]
    NoMember { strukt: String, path: String },
}

/// One type of the type section, as much of it as the lookups need.
#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// Struct/union members: (name_off, type id, bit offset).
    members: Vec<(u32, u32, u32)>,
    /// Enum values: (name_off, value).
    values: Vec<(u32, i64)>,
}

/// A parsed BTF blob.
#[derive(Debug)]
pub struct Btf {
    /// Index 0 is `void`; type ids start at 1.
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| {
            BtfError::Format(format!(
                "reading {path}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
            ))
        })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob (base BTF, no split).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let bad = |what: &str| BtfError::Format(what.to_string());
        if u16_at(0) != Some(MAGIC) {
            return Err(bad("not little-endian BTF (magic 0xeb9f expected)"));
        }
        let hdr_len = u32_at(4).ok_or_else(|| bad("short header"))? as usize;
        let field = |o| {
            u32_at(o)
                .map(|v| v as usize)
                .ok_or_else(|| bad("short header"))
        };
        let (type_off, type_len) = (field(8)?, field(12)?);
        let (str_off, str_len) = (field(16)?, field(20)?);
        let section = |off: usize, len: usize, what: &str| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or_else(|| bad(&format!("{what} section out of bounds")))
        };
        let tsec = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let at = |o: usize| {
            tsec.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("type section truncated"))
        };
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            size_or_type: 0,
            members: Vec::new(),
            values: Vec::new(),
        }];
        let mut o = 0usize;
        while o < tsec.len() {
            let name_off = at(o)?;
            let info = at(o + 4)?;
            let size_or_type = at(o + 8)?;
            o += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let mut t = Type {
                name_off,
                kind,
                kind_flag: info >> 31 == 1,
                size_or_type,
                members: Vec::new(),
                values: Vec::new(),
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => o += 4,
                KIND_ARRAY => o += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        t.members.push((at(o)?, at(o + 4)?, at(o + 8)?));
                        o += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let v = at(o + 4)? as i32;
                        // An unsigned enum (kind_flag clear is signed).
                        let v = if t.kind_flag {
                            v as u32 as i64
                        } else {
                            v as i64
                        };
                        t.values.push((at(o)?, v));
                        o += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let v = ((at(o + 8)? as u64) << 32 | at(o + 4)? as u64) as i64;
                        t.values.push((at(o)?, v));
                        o += 12;
                    }
                }
                KIND_FUNC_PROTO => o += 8 * vlen,
                KIND_DATASEC => o += 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                k => {
                    return Err(bad(&format!(
                        "unknown type kind {k} (type {})",
                        types.len()
                    )));
                }
            }
            types.push(t);
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn named(&self, kinds: &[u32], name: &str) -> Option<&Type> {
        self.types
            .iter()
            .find(|t| kinds.contains(&t.kind) && self.name(t.name_off) == name)
    }

    /// The values of enum `name` (ENUM or ENUM64), value -> enumerator name.
    pub fn enum_values(&self, name: &str) -> Result<BTreeMap<i64, String>, BtfError> {
        let t = self
            .named(&[KIND_ENUM, KIND_ENUM64], name)
            .ok_or_else(|| BtfError::NotFound {
                kind: "enum",
                name: name.to_string(),
            })?;
        Ok(t.values
            .iter()
            .map(|&(n, v)| (v, self.name(n).to_string()))
            .collect())
    }

    /// The byte offset of `path` (member names, outer first) from the start
    /// of struct `strukt`; each step may sit in anonymous structs/unions.
    pub fn member_offset(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_string(),
            path: path.join("."),
        };
        let mut id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == strukt)
            .ok_or_else(|| BtfError::NotFound {
                kind: "struct",
                name: strukt.to_string(),
            })? as u32;
        let mut bits = 0u32;
        for step in path {
            let (off, member) = self.find_member(id, step, 0).ok_or_else(no_member)?;
            bits += off;
            id = member;
        }
        if !bits.is_multiple_of(8) {
            return Err(no_member());
        }
        Ok(bits / 8)
    }

    /// (bit offset, type id) of member `name` of the struct/union `id`.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(self.resolve(id) as usize)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for &(n, ty, off) in &t.members {
            // kind_flag: bitfield size in the top 8 bits, offset below.
            let off = if t.kind_flag { off & 0xff_ffff } else { off };
            if n == 0 {
                if let Some((inner, found)) = self.find_member(ty, name, depth + 1) {
                    return Some((off + inner, found));
                }
            } else if self.name(n) == name {
                return Some((off, ty));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, info, size_or_type, trailing words).
    fn blob(types: &[(&str, u32, u32, &[u32])], extra_names: &[&str]) -> (Vec<u8>, Vec<u32>) {
        let mut strings = vec![0u8];
        let mut offs = Vec::new();
        let add = |s: &str, strings: &mut Vec<u8>| {
            if s.is_empty() {
                return 0;
            }
            let o = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            o
        };
        for n in extra_names {
            offs.push(add(n, &mut strings));
        }
        let mut tsec = Vec::new();
        for (name, info, sot, rest) in types {
            let n = add(name, &mut strings);
            for w in [n, *info, *sot].iter().chain(rest.iter()) {
                tsec.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_le_bytes());
        d.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            tsec.len() as u32,
            tsec.len() as u32,
            strings.len() as u32,
        ] {
            d.extend_from_slice(&w.to_le_bytes());
        }
        d.extend_from_slice(&tsec);
        d.extend_from_slice(&strings);
        (d, offs)
    }

    #[test]
    fn reads_enum_names_and_nested_member_offsets() {
        // Names the enum values and members refer to, first in the string
        // section: offsets 1, 14, 27, 31, 35.
        let names = ["SKB_CONSUMED", "SKB_DROP_X_Y", "dev", "len", "inum"];
        let (_, offs) = blob(&[], &names);
        let [consumed, drop, dev, len, inum] = offs[..] else {
            panic!()
        };
        let info = |kind: u32, vlen: u32| kind << 24 | vlen;
        let (data, _) = blob(
            &[
                // 1: int
                ("int", info(KIND_INT, 0), 4, &[32]),
                // 2: enum skb_drop_reason { SKB_CONSUMED = 1, SKB_DROP_X_Y = 77 }
                (
                    "skb_drop_reason",
                    info(KIND_ENUM, 2) | 1 << 31,
                    4,
                    &[consumed, 1, drop, 77],
                ),
                // 3: union { int pad; int dev @ bit 0 } (anonymous)
                ("", info(KIND_UNION, 1), 8, &[dev, 1, 0]),
                // 4: struct sk_buff { int len @ 0; <anon union> @ 64 }
                ("sk_buff", info(KIND_STRUCT, 2), 16, &[len, 1, 0, 0, 3, 64]),
                // 5: typedef possible = sk_buff; 6: struct net { possible ns @ 128 }
                ("possible", info(KIND_TYPEDEF, 0), 4, &[]),
                ("net", info(KIND_STRUCT, 1), 32, &[inum, 5, 128]),
            ],
            &names,
        );
        let btf = Btf::parse(&data).unwrap();
        let e = btf.enum_values("skb_drop_reason").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[&1], "SKB_CONSUMED");
        assert_eq!(e[&77], "SKB_DROP_X_Y");
        assert_eq!(btf.member_offset("sk_buff", &["dev"]), Ok(8));
        assert_eq!(btf.member_offset("sk_buff", &["len"]), Ok(0));
        // Through the typedef: net.inum (16) + sk_buff.dev (8).
        assert_eq!(btf.member_offset("net", &["inum", "dev"]), Ok(24));
        assert!(matches!(
            btf.member_offset("sk_buff", &["nope"]),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.enum_values("other"),
            Err(BtfError::NotFound { .. })
        ));
        assert!(Btf::parse(&data[..20]).is_err());
    }

    /// The running kernel (6.x with BTF, as flowd requires): the reasons
    /// the e2e tests count exist, and SKB_CONSUMED is not a drop.
    #[test]
    fn reads_the_running_kernels_drop_reasons() {
        let btf = Btf::from_sys_fs().unwrap();
        let e = btf.enum_values("skb_drop_reason").unwrap();
        let names: Vec<&str> = e.values().map(String::as_str).collect();
        for want in [
            "SKB_CONSUMED",
            "SKB_NOT_DROPPED_YET",
            "SKB_DROP_REASON_NETFILTER_DROP",
            "SKB_DROP_REASON_NO_SOCKET",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let dev = btf.member_offset("sk_buff", &["dev"]).unwrap();
        let len = btf.member_offset("sk_buff", &["len"]).unwrap();
        assert!(dev < len && len < 256, "dev {dev} len {len}");
        btf.member_offset("net_device", &["ifindex"]).unwrap();
        btf.member_offset("net_device", &["nd_net", "net"]).unwrap();
        btf.member_offset("net", &["ns", "inum"]).unwrap();
    }
}
