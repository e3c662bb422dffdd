//! The kernel programs' stack budget, read from the built BPF object.
//!
//! The verifier refuses a program whose deepest chain of BPF-to-BPF calls uses more than
//! 512 bytes of stack, counted frame by frame. What a frame costs depends on the compiler,
//! LLVM and the kernel, and the verifier counts only the paths the load-time globals leave
//! reachable, so a program that loaded once, with one set of flags, proves little. This
//! module bounds every program over every path from the object alone, needing no root and
//! no kernel: a function's frame is the deepest byte below `r10` that its instructions
//! touch or take the address of; its callees are its pseudo-calls and the functions whose
//! address it loads (callbacks such as `bpf_loop`'s); each frame is rounded up the way the
//! strictest kernels round it. `build.rs` refuses to build portrace when a program exceeds
//! [`BUDGET`], and `portrace doctor` prints the figures.
//!
//! It is pure: bytes in, figures out. `build.rs` includes this file by path, so it uses
//! nothing but `std` and the `object` crate.

use std::collections::BTreeMap;
use std::fmt;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionIndex, SymbolKind};

/// What the verifier allows a program's deepest call chain (`MAX_BPF_STACK`).
pub const VERIFIER_LIMIT: u32 = 512;
/// What portrace allows itself: a quarter of the verifier's limit is kept for a compiler,
/// an LLVM or a kernel that lays frames out less tightly than the ones measured.
pub const BUDGET: u32 = 384;

/// Every kernel rounds each frame of a chain up to this (the interpreter's granularity;
/// kernels with a JIT round to 16 since 6.8, older ones to 32 whatever the JIT), and
/// counts a frame that uses no stack as one byte.
const FRAME_ROUNDING: u32 = 32;
/// The helper `bpf_loop`, which the kernel inlines since 5.19, giving the caller three
/// more 8-byte stack slots for the loop's counters.
const HELPER_BPF_LOOP: i32 = 181;
const BPF_LOOP_INLINE_SLOTS: u32 = 3 * 8;

/// One program's worst call chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStack {
    /// The program's name (its symbol).
    pub program: String,
    /// The chain that uses the most stack, from the program down: each function and the
    /// bytes its frame uses (before rounding).
    pub chain: Vec<(String, u32)>,
    /// The chain's cost as the verifier counts it: frames rounded, added up.
    pub total: u32,
}

/// The figures of every program in an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackReport {
    pub programs: Vec<ProgramStack>,
    pub budget: u32,
}

impl StackReport {
    /// The programs over the budget.
    pub fn over_budget(&self) -> impl Iterator<Item = &ProgramStack> {
        self.programs.iter().filter(move |p| p.total > self.budget)
    }

    /// `Ok` when every program is within the budget; otherwise an error that shows every
    /// program's figure and names the ones over it.
    pub fn check(&self) -> Result<(), String> {
        let over: Vec<&str> = self.over_budget().map(|p| p.program.as_str()).collect();
        if over.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the kernel programs' stack is over budget: {} use{} more than {} of the verifier's {} bytes \
             on a call chain. Move big values (records, copies passed by value) into per-CPU scratch maps \
             or ring-buffer reservations, or keep helpers from being inlined into a large frame.\n{self}",
            over.join(", "),
            if over.len() == 1 { "s" } else { "" },
            self.budget,
            VERIFIER_LIMIT,
        ))
    }
}

impl fmt::Display for StackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.programs.iter().map(|p| p.program.len()).max().unwrap_or(0);
        for p in &self.programs {
            let mark = if p.total > self.budget { "OVER" } else { "ok" };
            let chain: Vec<String> = p.chain.iter().map(|(name, bytes)| format!("{} {bytes}", short_name(name))).collect();
            writeln!(
                f,
                "  {:<width$}  {:>3} of {} bytes  {:<4}  {}",
                p.program,
                p.total,
                self.budget,
                mark,
                chain.join(" -> "),
            )?;
        }
        Ok(())
    }
}

/// A Rust symbol's last path segment (`_RNvNtCs..._8portrace7program7process` reads
/// `process`); other names unchanged.
fn short_name(symbol: &str) -> &str {
    let Some(rest) = symbol.strip_prefix("_R") else { return symbol };
    // v0 mangling ends with <decimal length><identifier>; take the last such pair.
    let bytes = rest.as_bytes();
    let mut i = bytes.len();
    let mut best = symbol;
    // Walk back over the identifier: try every split where digits precede a suffix whose
    // length they state.
    while i > 0 {
        i -= 1;
        if !bytes[i].is_ascii_digit() {
            continue;
        }
        let mut start = i;
        while start > 0 && bytes[start - 1].is_ascii_digit() {
            start -= 1;
        }
        if let Ok(len) = rest[start..=i].parse::<usize>() {
            if i + 1 + len == bytes.len() && len > 0 {
                best = &rest[i + 1..];
                break;
            }
        }
        i = start;
    }
    best
}

/// Why an object could not be analysed.
#[derive(Debug, PartialEq, Eq)]
pub struct StackError(pub String);

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot work out the kernel programs' stack use: {}", self.0)
    }
}

impl std::error::Error for StackError {}

/// One BPF instruction (8 bytes; `lddw` takes two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    fn decode(b: &[u8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

const FRAME_POINTER: u8 = 10;
const CLASS_MASK: u8 = 0x07;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU64: u8 = 0x07;
const OP_ADD_K: u8 = 0x07;
const OP_SUB_K: u8 = 0x17;
const OP_MOV_X: u8 = 0xbf;
const OP_CALL: u8 = 0x85;
const OP_LDDW: u8 = 0x18;
const OP_EXIT: u8 = 0x95;
const OP_JA: u8 = 0x05;
const OP_JA32: u8 = 0x06;
const PSEUDO_CALL: u8 = 1;

/// Whether a function's code ends where the verifier wants it to, with an exit or a jump.
/// A function that ends otherwise is one the compiler left a path in that never returns (a
/// panic, an `unreachable`), which every kernel refuses ("last insn is not an exit or
/// jmp").
pub fn ends_in_exit_or_jump(insns: &[Insn]) -> bool {
    insns.last().is_some_and(|last| matches!(last.code, OP_EXIT | OP_JA | OP_JA32))
}

/// The deepest byte below the frame pointer that a function's instructions reach: a load
/// or store through `r10`, or an address `r10 - N` made in a register (passed to a helper
/// or a callee). Registers are followed in a straight line; a register's value is
/// forgotten when anything else writes it.
pub fn frame_size(insns: &[Insn]) -> u32 {
    // For each register: Some(k) while it holds r10 + k.
    let mut fp_based: [Option<i64>; 11] = [None; 11];
    fp_based[usize::from(FRAME_POINTER)] = Some(0);
    let mut deepest: i64 = 0;
    let mut note = |at: i64| deepest = deepest.max(-at);
    let mut i = 0;
    while i < insns.len() {
        let insn = insns[i];
        let class = insn.code & CLASS_MASK;
        let (dst, src) = (usize::from(insn.dst.min(10)), usize::from(insn.src.min(10)));
        match class {
            CLASS_LDX => {
                if let Some(k) = fp_based[src] {
                    note(k + i64::from(insn.off));
                }
                if dst != usize::from(FRAME_POINTER) {
                    fp_based[dst] = None;
                }
            }
            CLASS_ST | CLASS_STX => {
                if let Some(k) = fp_based[dst] {
                    note(k + i64::from(insn.off));
                }
            }
            CLASS_ALU64 if dst != usize::from(FRAME_POINTER) => match insn.code {
                OP_MOV_X => fp_based[dst] = fp_based[src],
                OP_ADD_K => {
                    fp_based[dst] = fp_based[dst].map(|k| k + i64::from(insn.imm));
                    if let Some(k) = fp_based[dst] {
                        note(k);
                    }
                }
                OP_SUB_K => {
                    fp_based[dst] = fp_based[dst].map(|k| k - i64::from(insn.imm));
                    if let Some(k) = fp_based[dst] {
                        note(k);
                    }
                }
                _ => fp_based[dst] = None,
            },
            _ => {
                if insn.code == OP_CALL {
                    // Calls clobber r0-r5.
                    for r in fp_based.iter_mut().take(6) {
                        *r = None;
                    }
                } else if insn.code & CLASS_MASK == 0x04 || insn.code & CLASS_MASK == 0x00 {
                    // 32-bit ALU and loads of immediates write dst with no frame address.
                    if dst != usize::from(FRAME_POINTER) {
                        fp_based[dst] = None;
                    }
                }
            }
        }
        i += if insn.code == OP_LDDW { 2 } else { 1 };
    }
    let mut bytes = deepest.max(0) as u32;
    if insns.iter().any(|insn| insn.code == OP_CALL && insn.src == 0 && insn.imm == HELPER_BPF_LOOP) {
        bytes += BPF_LOOP_INLINE_SLOTS;
    }
    bytes
}

/// A function of the object: its frame and the functions it calls (or hands to a helper).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub frame: u32,
    pub callees: Vec<usize>,
    /// Its last instruction is an exit or a jump ([`ends_in_exit_or_jump`]).
    pub ends_well: bool,
}

/// The cost the verifier counts for one frame.
fn rounded(frame: u32) -> u32 {
    frame.max(1).div_ceil(FRAME_ROUNDING) * FRAME_ROUNDING
}

/// Each program's worst chain, given the call graph (`programs` index into `functions`).
/// BPF has no recursion; a cycle is an error.
pub fn worst_chains(functions: &[Function], programs: &[usize], budget: u32) -> Result<StackReport, StackError> {
    // Memoised depth-first search: for each function, the cost of its worst chain and the
    // callee on it.
    let mut best: Vec<Option<(u32, Option<usize>)>> = vec![None; functions.len()];
    let mut on_path = vec![false; functions.len()];
    fn visit(
        f: usize,
        functions: &[Function],
        best: &mut Vec<Option<(u32, Option<usize>)>>,
        on_path: &mut Vec<bool>,
    ) -> Result<u32, StackError> {
        if let Some((cost, _)) = best[f] {
            return Ok(cost);
        }
        if on_path[f] {
            return Err(StackError(format!("{} calls itself through a cycle", functions[f].name)));
        }
        on_path[f] = true;
        let mut worst: (u32, Option<usize>) = (0, None);
        for &callee in &functions[f].callees {
            let cost = visit(callee, functions, best, on_path)?;
            if worst.1.is_none() || cost > worst.0 {
                worst = (cost, Some(callee));
            }
        }
        on_path[f] = false;
        let total = rounded(functions[f].frame) + worst.0;
        best[f] = Some((total, worst.1));
        Ok(total)
    }
    let mut report = StackReport { programs: Vec::new(), budget };
    for &p in programs {
        let total = visit(p, functions, &mut best, &mut on_path)?;
        let mut chain = Vec::new();
        let mut at = Some(p);
        while let Some(f) = at {
            chain.push((functions[f].name.clone(), functions[f].frame));
            at = best[f].and_then(|(_, next)| next);
        }
        report.programs.push(ProgramStack { program: functions[p].name.clone(), chain, total });
    }
    Ok(report)
}

/// Analyses a BPF ELF object: every program (a function in a section other than `.text`)
/// and its worst chain.
pub fn analyse(elf: &[u8], budget: u32) -> Result<StackReport, StackError> {
    let file = object::File::parse(elf).map_err(|e| StackError(format!("not an ELF object: {e}")))?;
    // Functions by (section, start offset).
    let mut index: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    let mut spans: Vec<(SectionIndex, u64, u64)> = Vec::new();
    let mut functions: Vec<Function> = Vec::new();
    let mut programs = Vec::new();
    for symbol in file.symbols() {
        if symbol.kind() != SymbolKind::Text || symbol.size() == 0 {
            continue;
        }
        let Some(section_index) = symbol.section_index() else { continue };
        let section = file.section_by_index(section_index).map_err(|e| StackError(e.to_string()))?;
        let section_name = section.name().unwrap_or_default();
        if index.contains_key(&(section_index.0, symbol.address())) {
            continue;
        }
        let name = symbol.name().map_err(|e| StackError(e.to_string()))?.to_string();
        index.insert((section_index.0, symbol.address()), functions.len());
        spans.push((section_index, symbol.address(), symbol.size()));
        if section_name != ".text" {
            programs.push(functions.len());
        }
        functions.push(Function { name, ..Function::default() });
    }
    if programs.is_empty() {
        return Err(StackError("the object has no programs".into()));
    }
    for (f, &(section_index, start, size)) in spans.iter().enumerate() {
        let section = file.section_by_index(section_index).map_err(|e| StackError(e.to_string()))?;
        let data = section.data().map_err(|e| StackError(e.to_string()))?;
        let (start_u, end) = (start as usize, (start + size) as usize);
        if end > data.len() || size % 8 != 0 {
            return Err(StackError(format!("{} lies outside its section", functions[f].name)));
        }
        let insns: Vec<Insn> = data[start_u..end].chunks_exact(8).map(Insn::decode).collect();
        functions[f].frame = frame_size(&insns);
        functions[f].ends_well = ends_in_exit_or_jump(&insns);
        // Where each call or address load leads: through a relocation when there is one.
        let relocations: BTreeMap<u64, RelocationTarget> =
            section.relocations().map(|(offset, r)| (offset, r.target())).collect();
        let mut callees = Vec::new();
        for (k, insn) in insns.iter().enumerate() {
            let at = start + 8 * k as u64;
            let is_call = insn.code == OP_CALL && insn.src == PSEUDO_CALL;
            let is_address = insn.code == OP_LDDW;
            if !is_call && !is_address {
                continue;
            }
            let target = match relocations.get(&at) {
                Some(RelocationTarget::Symbol(symbol_index)) => {
                    let symbol = file.symbol_by_index(*symbol_index).map_err(|e| StackError(e.to_string()))?;
                    let Some(target_section) = symbol.section_index() else { continue };
                    let target_kind = file
                        .section_by_index(target_section)
                        .map(|s| s.kind())
                        .map_err(|e| StackError(e.to_string()))?;
                    if target_kind != object::SectionKind::Text {
                        continue;
                    }
                    let offset = match (symbol.kind(), is_call) {
                        // A call's immediate counts instructions, less one.
                        (SymbolKind::Section, true) => (i64::from(insn.imm) + 1) * 8,
                        (SymbolKind::Section, false) => i64::from(insn.imm),
                        (_, true) => symbol.address() as i64 + (i64::from(insn.imm) + 1) * 8,
                        (_, false) => symbol.address() as i64 + i64::from(insn.imm),
                    };
                    Some((target_section, offset))
                }
                Some(_) => None,
                None if is_call => Some((section_index, at as i64 + 8 + i64::from(insn.imm) * 8)),
                None => None,
            };
            let Some((target_section, offset)) = target else { continue };
            let Ok(offset) = u64::try_from(offset) else {
                return Err(StackError(format!("{} calls before its section's start", functions[f].name)));
            };
            match index.get(&(target_section.0, offset)) {
                Some(&callee) => callees.push(callee),
                None if is_call => {
                    return Err(StackError(format!(
                        "{} calls offset {offset:#x}, where no function starts",
                        functions[f].name
                    )))
                }
                None => {}
            }
        }
        callees.sort_unstable();
        callees.dedup();
        functions[f].callees = callees;
    }
    // Every function a program can reach must end as the verifier wants.
    let mut reached = vec![false; functions.len()];
    let mut stack = programs.clone();
    while let Some(f) = stack.pop() {
        if std::mem::replace(&mut reached[f], true) {
            continue;
        }
        if !functions[f].ends_well {
            return Err(StackError(format!(
                "{} does not end with an exit or a jump: the compiler left a path in it that never returns \
                 (a panic, such as an index it could not prove in bounds), and every kernel's verifier refuses \
                 that (\"last insn is not an exit or jmp\"); make the path return instead",
                functions[f].name
            )));
        }
        stack.extend(functions[f].callees.iter().copied());
    }
    let mut report = worst_chains(&functions, &programs, budget)?;
    report.programs.sort_by(|a, b| a.program.cmp(&b.program));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, dst, src, off, imm }
    }
    const STX_DW: u8 = 0x7b;
    const LDX_DW: u8 = 0x79;
    const ST_W: u8 = 0x62;
    const MOV_K: u8 = 0xb7;
    const EXIT: u8 = 0x95;

    #[test]
    fn a_function_must_end_with_an_exit_or_a_jump() {
        assert!(ends_in_exit_or_jump(&[insn(OP_MOV_X, 1, 10, 0, 0), insn(OP_EXIT, 0, 0, 0, 0)]));
        assert!(ends_in_exit_or_jump(&[insn(OP_JA, 0, 0, -2, 0)]));
        // A call to a function that never returns, then nothing: what a panic path leaves.
        assert!(!ends_in_exit_or_jump(&[insn(OP_MOV_X, 1, 10, 0, 0), insn(OP_CALL, 0, 1, 0, 3)]));
        assert!(!ends_in_exit_or_jump(&[]));
    }

    #[test]
    fn a_frame_is_the_deepest_access_or_address_below_r10() {
        let insns = [
            insn(STX_DW, 10, 1, -8, 0),
            insn(LDX_DW, 2, 10, -40, 0),
            insn(ST_W, 10, 0, -12, 7),
            insn(EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(frame_size(&insns), 40);
        // r1 = r10; r1 += -120: a 120-byte value's address handed to a helper.
        let address = [insn(OP_MOV_X, 1, 10, 0, 0), insn(OP_ADD_K, 1, 0, 0, -120), insn(OP_CALL, 0, 0, 0, 4)];
        assert_eq!(frame_size(&address), 120);
        // Through a copy, then an access below it.
        let copy = [
            insn(OP_MOV_X, 3, 10, 0, 0),
            insn(OP_ADD_K, 3, 0, 0, -64),
            insn(OP_MOV_X, 4, 3, 0, 0),
            insn(STX_DW, 4, 1, -16, 0),
        ];
        assert_eq!(frame_size(&copy), 80);
        // A register overwritten by something else no longer points into the frame.
        let overwritten = [insn(OP_MOV_X, 3, 10, 0, 0), insn(MOV_K, 3, 0, 0, 0), insn(STX_DW, 3, 1, -300, 0)];
        assert_eq!(frame_size(&overwritten), 0);
        // bpf_loop, inlined by the kernel, takes three slots of its caller's frame.
        let looping = [insn(STX_DW, 10, 1, -8, 0), insn(OP_CALL, 0, 0, 0, HELPER_BPF_LOOP)];
        assert_eq!(frame_size(&looping), 8 + 24);
    }

    fn graph() -> Vec<Function> {
        vec![
            Function { name: "prog".into(), frame: 200, callees: vec![1, 2], ends_well: true },
            Function { name: "small".into(), frame: 8, callees: vec![], ends_well: true },
            Function { name: "big".into(), frame: 150, callees: vec![3], ends_well: true },
            Function { name: "leaf".into(), frame: 0, callees: vec![], ends_well: true },
        ]
    }

    #[test]
    fn the_worst_chain_adds_rounded_frames() {
        let report = worst_chains(&graph(), &[0], BUDGET).unwrap();
        let p = &report.programs[0];
        // 224 + 160 + 32 (an empty frame counts as one rounded slot).
        assert_eq!(p.total, 416);
        let names: Vec<&str> = p.chain.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["prog", "big", "leaf"]);
    }

    #[test]
    fn a_program_over_budget_fails_the_check_by_name() {
        let report = worst_chains(&graph(), &[0, 1], BUDGET).unwrap();
        let err = report.check().unwrap_err();
        assert!(err.starts_with("the kernel programs' stack is over budget: prog uses more than 384"), "{err}");
        assert!(err.contains("\n  prog   416 of 384 bytes  OVER  prog 200 -> big 150 -> leaf 0\n"), "{err}");
        assert!(err.contains("\n  small   32 of 384 bytes  ok    small 8\n"), "{err}");
        // The same figures within a wider budget pass.
        assert!(worst_chains(&graph(), &[0, 1], 416).unwrap().check().is_ok());
    }

    #[test]
    fn recursion_is_refused() {
        let mut g = graph();
        g[3].callees = vec![0];
        let err = worst_chains(&g, &[0], BUDGET).unwrap_err();
        assert!(err.0.contains("cycle"), "{err}");
    }

    #[test]
    fn rust_symbols_read_by_their_last_segment() {
        assert_eq!(short_name("_RNvNtCsluPAgJcp4Am_8portrace7program7process"), "process");
        assert_eq!(short_name("_RNvNtCsluPAgJcp4Am_8portrace7program15from_tracepoint"), "from_tracepoint");
        assert_eq!(short_name("memset"), "memset");
    }

    #[test]
    fn portraces_own_programs_are_within_budget() {
        let report = analyse(crate::loader::object(), BUDGET).expect("the embedded object is analysed");
        let names: Vec<&str> = report.programs.iter().map(|p| p.program.as_str()).collect();
        for program in ["inet_sock_set_state", "inet_sock_set_state_backup", "timer_start", "timer_cancel"] {
            assert!(names.contains(&program), "{program} missing from {names:?}");
        }
        // Every chain starts at its program and costs at least its first frame.
        for p in &report.programs {
            assert_eq!(p.chain[0].0, p.program);
            assert!(p.total >= rounded(p.chain[0].1));
        }
        println!("{report}");
        report.check().unwrap();
    }

    #[test]
    fn garbage_is_not_an_object() {
        assert!(analyse(b"not an elf", BUDGET).unwrap_err().to_string().contains("not an ELF object"));
    }
}
