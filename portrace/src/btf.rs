//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to find where a
//! member lies inside a kernel structure (`struct sock_common`'s `skc_dport`, say), so the
//! kernel program can read structures whose layout changes between kernels. It follows
//! anonymous structs and unions, typedefs and qualifiers; it reads nothing it does not need.

use std::collections::HashMap;
use std::path::Path;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
/// The kind of a `typedef`, for [`Btf::typedef`].
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
const KIND_PTR: u32 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("BTF data is malformed: {0}")]
    Malformed(String),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("struct {strukt} member {member} is a bitfield; portrace cannot read it")]
    Bitfield { strukt: String, member: String },
}

/// Where a member lies in its structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

/// One type's header, read where it lies in the data when it is needed.
#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u32,
    /// `size` for ints, structs, unions and enums; the referenced type for the others.
    size_or_type: u32,
    kind_flag: bool,
    /// How many members (structs, unions) or other entries follow the header.
    vlen: usize,
    /// Where the entries after the header start in the type section.
    body: usize,
}

/// The kernel's BTF, indexed: the raw bytes, and where each type starts in them. Types are
/// decoded when they are looked at, so reading the kernel's (some 150,000 types) costs one
/// pass and one offset per type, not a copy of it.
#[derive(Debug)]
pub struct Btf {
    data: Vec<u8>,
    /// Where the type and string sections lie in `data`.
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Where each type's header starts in the type section, by type id (id 0, `void`,
    /// has none: its entry is never read).
    at: Vec<u32>,
    /// Named structs: the first complete definition of each name.
    structs: HashMap<String, u32>,
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_kernel() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|e| BtfError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Btf::from_bytes(data)
    }

    /// Parses raw BTF (native byte order, as the kernel exports it).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::from_bytes(data.to_vec())
    }

    fn from_bytes(data: Vec<u8>) -> Result<Btf, BtfError> {
        let bad = |what: &str| BtfError::Malformed(what.to_string());
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        if u16_at(0) != Some(MAGIC) {
            return Err(bad("bad magic number"));
        }
        let header = |i: usize| u32_at(4 + 4 * i).ok_or_else(|| bad("truncated header"));
        let hdr_len = header(0)? as usize;
        let (type_off, type_len) = (header(1)? as usize, header(2)? as usize);
        let (str_off, str_len) = (header(3)? as usize, header(4)? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or_else(|| bad("section offset overflows"))?;
            let end = start.checked_add(len).ok_or_else(|| bad("section length overflows"))?;
            if end > data.len() {
                return Err(bad("section beyond the end of the data"));
            }
            Ok(start..end)
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let type_data = &data[types.clone()];
        let rd = |o: usize| -> Result<u32, BtfError> {
            type_data
                .get(o..o + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("type section truncated"))
        };
        // Type id 0 is `void`.
        let mut at = vec![0u32];
        let mut named_structs = Vec::new();
        let mut pos = 0usize;
        while pos < type_data.len() {
            let name_off = rd(pos)?;
            let info = rd(pos + 4)?;
            rd(pos + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let body = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12
                | 16 | KIND_TYPE_TAG => 0,
                other => return Err(BtfError::Malformed(format!("unknown type kind {other}"))),
            };
            let id = at.len() as u32;
            at.push(u32::try_from(pos).map_err(|_| bad("type section beyond 4 GiB"))?);
            pos += 12;
            if body > 0 {
                // The last word of the entries must be there.
                rd(pos + body - 4)?;
            }
            pos += body;
            if kind == KIND_STRUCT && name_off != 0 {
                named_structs.push((name_off, id));
            }
        }
        let mut btf = Btf { data, types, strings, at, structs: HashMap::new() };
        for (name_off, id) in named_structs {
            let name = btf.name(name_off).to_string();
            // Keep the first complete definition (a name can repeat in split BTF).
            btf.structs.entry(name).or_insert(id);
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let strings = &self.data[self.strings.clone()];
        let rest = strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// A word of the type section (0 past its end, which parsing ruled out).
    fn word(&self, at: usize) -> u32 {
        let type_data = &self.data[self.types.clone()];
        type_data.get(at..at + 4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn get(&self, id: u32) -> Option<Type> {
        if id == 0 {
            return Some(Type { kind: 0, size_or_type: 0, kind_flag: false, vlen: 0, body: 0 });
        }
        let pos = *self.at.get(id as usize)? as usize;
        let info = self.word(pos + 4);
        Some(Type {
            kind: (info >> 24) & 0x1f,
            size_or_type: self.word(pos + 8),
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            body: pos + 12,
        })
    }

    /// A struct's or union's members: (name offset, type, offset in bits).
    fn members(&self, t: &Type) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let body = t.body;
        let n = if matches!(t.kind, KIND_STRUCT | KIND_UNION) { t.vlen } else { 0 };
        (0..n).map(move |i| {
            let m = body + 12 * i;
            (self.word(m), self.word(m + 4), self.word(m + 8))
        })
    }

    /// The size in bytes of a type, following typedefs and qualifiers.
    fn size_of(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | 16 => return Some(t.size_or_type),
                KIND_PTR => return Some(8),
                KIND_ARRAY => {
                    let (elem, n) = (self.word(t.body), self.word(t.body + 8));
                    return self.size_of(elem)?.checked_mul(n);
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                _ => return None,
            }
        }
        None
    }

    /// The id of the typedef named `name` (a BTF-typed tracepoint program attaches to
    /// `btf_trace_<tracepoint>`, one of these).
    pub fn typedef(&self, name: &str) -> Option<u32> {
        (1..self.at.len() as u32).find(|&id| {
            let pos = self.at[id as usize] as usize;
            self.get(id).is_some_and(|t| t.kind == KIND_TYPEDEF) && self.name(self.word(pos)) == name
        })
    }

    /// Finds `member` in `struct strukt`, looking inside anonymous structs and unions.
    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, BtfError> {
        let id = *self.structs.get(strukt).ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let no_member = || BtfError::NoMember { strukt: strukt.to_string(), member: member.to_string() };
        let (bits, ty, bitfield) = self.find(id, member, 0, 0).ok_or_else(no_member)?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::Bitfield { strukt: strukt.to_string(), member: member.to_string() });
        }
        let size = self.size_of(ty).ok_or_else(no_member)?;
        Ok(Member { offset: bits / 8, size })
    }

    /// Depth-first search; returns (offset in bits, type id, is a bitfield).
    fn find(&self, id: u32, member: &str, base_bits: u32, depth: u32) -> Option<(u32, u32, bool)> {
        if depth > 8 {
            return None;
        }
        let t = self.get(id)?;
        for (name_off, ty, raw_offset) in self.members(&t) {
            let (offset, bitfield) = if t.kind_flag {
                (raw_offset & 0x00ff_ffff, raw_offset >> 24 != 0)
            } else {
                (raw_offset, false)
            };
            let here = base_bits + offset;
            if name_off == 0 {
                let inner = self.resolve(ty)?;
                if let Some(found) = self.find(inner, member, here, depth + 1) {
                    return Some(found);
                }
            } else if self.name(name_off) == member {
                return Some((here, ty, bitfield));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                _ => return Some(id),
            }
        }
        None
    }
}

/// Where the backup program finds a socket's fields, from the kernel's BTF.
pub fn sock_layout(btf: &Btf) -> Result<portrace_ebpf::SockLayout, BtfError> {
    let offset = |strukt: &str, member: &str, sizes: &[u32]| -> Result<(u16, u32), BtfError> {
        let m = btf.member(strukt, member)?;
        if !sizes.contains(&m.size) || m.offset > u32::from(u16::MAX) {
            return Err(BtfError::Malformed(format!(
                "struct {strukt} member {member} is {} bytes at offset {}, not what portrace reads",
                m.size, m.offset
            )));
        }
        Ok((m.offset as u16, m.size))
    };
    let (protocol, protocol_size) = offset("sock", "sk_protocol", &[1, 2])?;
    Ok(portrace_ebpf::SockLayout {
        family: offset("sock_common", "skc_family", &[2])?.0,
        protocol,
        protocol_size: protocol_size as u16,
        sport: offset("inet_sock", "inet_sport", &[2])?.0,
        dport: offset("sock_common", "skc_dport", &[2])?.0,
        saddr: offset("inet_sock", "inet_saddr", &[4])?.0,
        daddr: offset("sock_common", "skc_daddr", &[4])?.0,
        saddr_v6: offset("sock_common", "skc_v6_rcv_saddr", &[16])?.0,
        daddr_v6: offset("sock_common", "skc_v6_daddr", &[16])?.0,
        num: offset("sock_common", "skc_num", &[2])?.0,
        rcv_saddr: offset("sock_common", "skc_rcv_saddr", &[4])?.0,
        cookie: offset("sock_common", "skc_cookie", &[8])?.0,
        net: offset("sock_common", "skc_net", &[8])?.0,
        net_inum: net_inum(btf)?,
        err: offset("sock", "sk_err", &[4])?.0,
        retransmits: offset("inet_connection_sock", "icsk_retransmits", &[1])?.0,
        tw_substate: offset("inet_timewait_sock", "tw_substate", &[1])?.0,
        tw_timer: offset("inet_timewait_sock", "tw_timer", &[40, 48, 56, 64, 72, 80])?.0,
        timer_function: offset("timer_list", "function", &[8])?.0,
        // Optional: without them an orphan's move to TIME_WAIT shows only at its end on
        // kernels before 6.11.
        skb_head: offset("sk_buff", "head", &[8]).map_or(0, |(at, _)| at),
        skb_network_header: offset("sk_buff", "network_header", &[2]).map_or(0, |(at, _)| at),
        skb_transport_header: offset("sk_buff", "transport_header", &[2]).map_or(0, |(at, _)| at),
        valid: 1,
        _pad: 0,
    })
}

/// Where `struct net` keeps its namespace inode number: `ns.inum` (`ns` is a
/// `struct ns_common`, whose `inum` is a 4-byte unsigned int).
fn net_inum(btf: &Btf) -> Result<u16, BtfError> {
    let ns = btf.member("net", "ns")?;
    let inum = btf.member("ns_common", "inum")?;
    if inum.size != 4 {
        return Err(BtfError::Malformed(format!("struct ns_common member inum is {} bytes, not 4", inum.size)));
    }
    u16::try_from(ns.offset + inum.offset)
        .map_err(|_| BtfError::Malformed("struct net's ns.inum lies beyond 64 KiB".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF bytes: header, then the given types and strings.
    fn build(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, type_bytes.len() as u32, type_bytes.len() as u32, strings.len() as u32] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&type_bytes);
        out.extend_from_slice(strings);
        out
    }

    fn info(kind: u32, vlen: u32) -> u32 {
        kind << 24 | vlen
    }

    /// struct pair { int a; union { int b; struct { short c; short d; }; }; }
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0short\0pair\0a\0b\0c\0d\0";
        let (int, short, pair, a, b, c, d) = (1, 5, 11, 16, 18, 20, 22);
        build(
            &[
                // 1: int (4 bytes)
                int, info(KIND_INT, 0), 4, 32,
                // 2: short
                short, info(KIND_INT, 0), 2, 16,
                // 3: anonymous struct { short c; short d; }
                0, info(KIND_STRUCT, 2), 4, c, 2, 0, d, 2, 16,
                // 4: anonymous union { int b; struct 3; }
                0, info(KIND_UNION, 2), 4, b, 1, 0, 0, 3, 0,
                // 5: struct pair { int a; union 4; }
                pair, info(KIND_STRUCT, 2), 8, a, 1, 0, 0, 4, 32,
            ],
            strings,
        )
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_structs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("pair", "a").unwrap(), Member { offset: 0, size: 4 });
        assert_eq!(btf.member("pair", "b").unwrap(), Member { offset: 4, size: 4 });
        assert_eq!(btf.member("pair", "c").unwrap(), Member { offset: 4, size: 2 });
        assert_eq!(btf.member("pair", "d").unwrap(), Member { offset: 6, size: 2 });
    }

    #[test]
    fn finds_a_typedef_by_its_whole_name() {
        let strings = b"\0int\0myint\0my\0";
        let btf = Btf::parse(&build(
            &[
                // 1: int, 2: typedef myint = int, 3: struct my (no members)
                1, info(KIND_INT, 0), 4, 32,
                5, info(KIND_TYPEDEF, 0), 1,
                11, info(KIND_STRUCT, 0), 0,
            ],
            strings,
        ))
        .unwrap();
        assert_eq!(btf.typedef("myint"), Some(2));
        assert_eq!(btf.typedef("myin"), None, "a prefix is not the name");
        assert_eq!(btf.typedef("int"), None, "an int is no typedef");
        assert_eq!(btf.typedef("my"), None, "nor is a struct");
    }

    #[test]
    fn missing_names_are_reported() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("nope", "a").unwrap_err(), BtfError::NoStruct("nope".into()));
        assert_eq!(
            btf.member("pair", "zz").unwrap_err().to_string(),
            "the kernel's struct pair has no member zz"
        );
    }

    #[test]
    fn malformed_data_is_an_error_not_a_panic() {
        let good = sample();
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&good[..10]).is_err());
        for cut in [30, 50, good.len() - 3] {
            assert!(Btf::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_kind = good.clone();
        bad_kind[24 + 7] = 0x1f; // kind 31 in the first type's info
        assert!(Btf::parse(&bad_kind).is_err());
    }

    #[test]
    fn reads_the_running_kernels_sock_common() {
        let btf = Btf::from_kernel().expect("this machine exports /sys/kernel/btf/vmlinux");
        let dport = btf.member("sock_common", "skc_dport").unwrap();
        let num = btf.member("sock_common", "skc_num").unwrap();
        assert_eq!((dport.size, num.size), (2, 2));
        assert_eq!(btf.member("sock_common", "skc_v6_daddr").unwrap().size, 16);
        assert_eq!(btf.member("sock_common", "skc_family").unwrap().size, 2);
        assert!(btf.member("sock", "sk_protocol").unwrap().size <= 2);
        let l = sock_layout(&btf).unwrap();
        // struct sock starts with struct sock_common, and inet_sock with struct sock: the
        // inet_sock fields lie past the end of sock_common.
        assert!(l.sport > l.daddr_v6 && l.saddr > l.daddr_v6, "{l:?}");
        assert_eq!(l.protocol_size, 2, "sk_protocol is a u16 since Linux 5.6");
    }
}
