//! BTF-typed timer programs without the kernel's BTF parsed whole. A BTF-typed program
//! reads the timer's function with a plain load where a raw tracepoint program needs a
//! probe read, which halves what the kernel's many other timers cost portrace (see
//! docs/benchmark.md, the quiet cost). But aya 0.14 loads one only given an `aya::Btf` in
//! which it looks up the tracepoint's `btf_trace_<name>` typedef by name, for the id the
//! kernel knows it by; parsing the kernel's BTF for that takes some 30 ms and 18 MB.
//! portrace gives it a stand-in instead: a small BTF that holds those typedefs at the ids
//! portrace's own index of the kernel's BTF ([`crate::btf`]) finds them at, every type
//! before them a four-byte integer. aya reads nothing else of it.

use crate::btf::Btf;

/// A BTF-typed program and the raw tracepoint program that does the same where it does
/// not load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Typed {
    pub program: &'static str,
    pub tracepoint: &'static str,
    pub raw: &'static str,
}

/// The typed timer programs: the two that run for every timer the kernel arms or removes.
/// (`timer_expire_entry` runs for expiries only, a few an hour per socket: it stays raw.)
pub const TIMERS: [Typed; 2] = [
    Typed { program: "timer_start_typed", tracepoint: "timer_start", raw: "timer_start" },
    Typed { program: "timer_cancel_typed", tracepoint: "timer_cancel", raw: "timer_cancel" },
];

/// The typed program named `program`, if it is one.
pub fn typed(program: &str) -> Option<&'static Typed> {
    TIMERS.iter().find(|t| t.program == program)
}

/// Most types a stand-in may hold (16 bytes each as BTF, a few dozen once aya has read
/// them): a kernel whose typedefs lie further in keeps the raw programs.
const MAX_TYPES: u32 = 100_000;

/// The stand-in for `btf`, the kernel's BTF, or why there is none.
pub fn stand_in(btf: &Btf) -> Result<aya::Btf, String> {
    let mut typedefs = Vec::new();
    for t in &TIMERS {
        let name = format!("btf_trace_{}", t.tracepoint);
        let id = btf.typedef(&name).ok_or_else(|| format!("the kernel's BTF has no {name}"))?;
        typedefs.push((name, id));
    }
    let blob = blob(&typedefs)?;
    aya::Btf::parse(&blob, aya::Endianness::default()).map_err(|e| format!("the stand-in BTF: {e}"))
}

/// A BTF blob with each `(name, id)` a typedef of type 1 at `id`, and every other type up
/// to the largest id a 32-bit integer with no name.
fn blob(typedefs: &[(String, u32)]) -> Result<Vec<u8>, String> {
    const KIND_INT: u32 = 1;
    const KIND_TYPEDEF: u32 = 8;
    let last = typedefs.iter().map(|(_, id)| *id).max().unwrap_or(0);
    if last > MAX_TYPES {
        return Err(format!("the timer tracepoints' types lie past the first {MAX_TYPES} of the kernel's BTF (at {last})"));
    }
    if typedefs.iter().any(|(_, id)| *id < 2) {
        return Err("a timer tracepoint's type has an id below 2".to_owned());
    }
    let mut strings = vec![0u8];
    let mut names = Vec::new();
    for (name, id) in typedefs {
        names.push((*id, strings.len() as u32));
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let mut types = Vec::with_capacity(last as usize * 16);
    let word = |types: &mut Vec<u8>, w: u32| types.extend_from_slice(&w.to_le_bytes());
    for id in 1..=last {
        match names.iter().find(|(at, _)| *at == id) {
            // struct btf_type { name_off, info (kind << 24), type }: a typedef of type 1.
            Some((_, name_off)) => {
                for w in [*name_off, KIND_TYPEDEF << 24, 1] {
                    word(&mut types, w);
                }
            }
            // { name_off, info, size } and the integer's encoding: 32 bits.
            None => {
                for w in [0, KIND_INT << 24, 4, 32] {
                    word(&mut types, w);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(24 + types.len() + strings.len());
    out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    out.extend_from_slice(&[1, 0]); // version, flags
    for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typedefs() -> Vec<(String, u32)> {
        vec![("btf_trace_timer_start".to_owned(), 11_415), ("btf_trace_timer_cancel".to_owned(), 11_423)]
    }

    #[test]
    fn the_stand_in_holds_each_typedef_at_the_kernels_id() {
        let blob = blob(&typedefs()).unwrap();
        // Read by portrace's own index and by aya, as the loader will.
        let ours = Btf::parse(&blob).unwrap();
        assert_eq!(ours.typedef("btf_trace_timer_start"), Some(11_415));
        assert_eq!(ours.typedef("btf_trace_timer_cancel"), Some(11_423));
        let aya = aya::Btf::parse(&blob, aya::Endianness::default()).unwrap();
        let id = |n: &str| aya.id_by_type_name_kind(n, aya_obj::btf::BtfKind::Typedef).unwrap();
        assert_eq!((id("btf_trace_timer_start"), id("btf_trace_timer_cancel")), (11_415, 11_423));
        assert!(blob.len() < 200_000, "{} bytes", blob.len());
    }

    #[test]
    fn a_kernel_whose_types_lie_too_far_keeps_the_raw_programs() {
        let far = vec![("btf_trace_timer_start".to_owned(), MAX_TYPES + 1)];
        assert!(blob(&far).unwrap_err().contains("past the first"));
        assert!(blob(&[("btf_trace_timer_start".to_owned(), 1)]).is_err());
    }

    #[test]
    fn every_typed_program_has_its_raw_twin() {
        for t in &TIMERS {
            assert_eq!(typed(t.program), Some(t));
            assert!(super::super::TIMER_PROGRAMS.contains(&t.raw), "{}", t.raw);
        }
        assert_eq!(typed("timer_start"), None);
    }

    #[test]
    fn this_kernels_btf_gives_a_stand_in() {
        let Ok(btf) = Btf::from_kernel() else { return };
        let stand_in = stand_in(&btf).expect("a stand-in from this kernel's BTF");
        for t in &TIMERS {
            let name = format!("btf_trace_{}", t.tracepoint);
            assert_eq!(stand_in.id_by_type_name_kind(&name, aya_obj::btf::BtfKind::Typedef).ok(), btf.typedef(&name));
        }
    }
}
