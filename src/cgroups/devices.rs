//! Device access rules: one model, written to devices.allow/deny on v1 and compiled to a
//! BPF_PROG_TYPE_CGROUP_DEVICE program on v2 (which has no devices files), as runc and crun do.
//!
//! Semantics are v1's: the last matching rule decides; a rule for all devices ("a *:* rwm")
//! sets the answer for anything no later rule matches.

/// One rule: allow or deny `access` (bits of MKNOD/READ/WRITE) on a device kind and numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    /// 'a' (all), 'c' or 'b'.
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

impl Rule {
    /// Parses the v1 file syntax "c 1:3 rwm" (with `allow` saying which file).
    pub fn parse(allow: bool, text: &str) -> Option<Rule> {
        let mut f = text.split_whitespace();
        let kind = f.next()?.chars().next()?;
        let (major, minor) = match f.next() {
            Some(nums) => {
                let (a, b) = nums.split_once(':')?;
                let num = |s: &str| {
                    if s == "*" {
                        Some(None)
                    } else {
                        s.parse().ok().map(Some)
                    }
                };
                (num(a)?, num(b)?)
            }
            None => (None, None),
        };
        let access = f.next().unwrap_or("rwm").chars().fold(0, |acc, c| {
            acc | match c {
                'm' => ACC_MKNOD,
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                _ => 0,
            }
        });
        Some(Rule {
            allow,
            kind,
            major,
            minor,
            access,
        })
    }

    fn is_catch_all(&self) -> bool {
        self.kind == 'a' && self.major.is_none() && self.minor.is_none()
    }
}

/// One eBPF instruction (struct bpf_insn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The program for `rules`. Registers after the prologue: r2 = device type, r3 = requested
/// access, r4 = major, r5 = minor (from struct bpf_cgroup_dev_ctx). Rules are emitted last
/// first, each returning its verdict on a match, so the last matching rule wins.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    // What no rule after the last catch-all matches gets the catch-all's answer (v1 starts
    // from "allow all").
    let start = rules.iter().rposition(Rule::is_catch_all);
    let default = start.is_none_or(|i| rules[i].allow);
    let considered = start.map_or(rules, |i| &rules[i + 1..]);
    for rule in considered.iter().rev() {
        let mut checks: Vec<Insn> = Vec::new();
        match rule.kind {
            'c' => checks.push(insn(JNE_K, 2, 0, 0, DEV_CHAR)),
            'b' => checks.push(insn(JNE_K, 2, 0, 0, DEV_BLOCK)),
            _ => {}
        }
        if rule.access & (ACC_MKNOD | ACC_READ | ACC_WRITE) != (ACC_MKNOD | ACC_READ | ACC_WRITE) {
            // requested & allowed must equal requested
            checks.push(insn(MOV32_X, 1, 3, 0, 0));
            checks.push(insn(AND32_K, 1, 0, 0, rule.access as i32));
            checks.push(insn(JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = rule.major {
            checks.push(insn(JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            checks.push(insn(JNE_K, 5, 0, 0, minor as i32));
        }
        // Every failed check jumps past this rule's two verdict instructions.
        let n = checks.len();
        for (i, c) in checks.iter_mut().enumerate() {
            if c.code == JNE_K || c.code == JNE_X {
                c.off = (n - i - 1 + 2) as i16;
            }
        }
        p.extend(checks);
        p.push(insn(MOV64_K, 0, 0, 0, i32::from(rule.allow)));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, i32::from(default)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of eBPF that `program` emits on (type, access, major, minor).
    fn eval(p: &[Insn], kind: i32, access: u32, major: u32, minor: u32) -> bool {
        let ctx = [((access << 16) | kind as u32), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                MOV32_X => r[dst] = r[src] as u32 as u64,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0] == 1,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn rules(list: &[(bool, &str)]) -> Vec<Rule> {
        list.iter()
            .map(|(a, t)| Rule::parse(*a, t).unwrap())
            .collect()
    }

    #[test]
    fn deny_all_then_allow_list() {
        let p = program(&rules(&[
            (false, "a *:* rwm"),
            (true, "c 1:3 rwm"),
            (true, "c 136:* rw"),
            (true, "b 8:0 r"),
        ]));
        assert!(eval(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3));
        assert!(eval(&p, DEV_CHAR, ACC_MKNOD, 1, 3));
        assert!(!eval(&p, DEV_CHAR, ACC_READ, 1, 1), "c 1:1 is not allowed");
        assert!(eval(&p, DEV_CHAR, ACC_READ, 136, 7));
        assert!(!eval(&p, DEV_CHAR, ACC_MKNOD, 136, 7), "no mknod on pts");
        assert!(eval(&p, DEV_BLOCK, ACC_READ, 8, 0));
        assert!(!eval(&p, DEV_BLOCK, ACC_WRITE, 8, 0), "read-only rule");
        assert!(
            !eval(&p, DEV_CHAR, ACC_READ, 8, 0),
            "the block rule does not match a char device"
        );
    }

    #[test]
    fn the_last_matching_rule_wins() {
        let p = program(&rules(&[
            (false, "a *:* rwm"),
            (true, "c 10:* rwm"),
            (false, "c 10:200 rwm"),
        ]));
        assert!(eval(&p, DEV_CHAR, ACC_READ, 10, 229));
        assert!(!eval(&p, DEV_CHAR, ACC_READ, 10, 200));
        // Without a catch-all, v1 starts from allow-all.
        let p = program(&rules(&[(false, "c 10:200 rwm")]));
        assert!(!eval(&p, DEV_CHAR, ACC_READ, 10, 200));
        assert!(eval(&p, DEV_CHAR, ACC_READ, 1, 1));
    }

    #[test]
    fn parses_the_v1_syntax() {
        assert_eq!(
            Rule::parse(true, "c 1:3 rw"),
            Some(Rule {
                allow: true,
                kind: 'c',
                major: Some(1),
                minor: Some(3),
                access: ACC_READ | ACC_WRITE
            })
        );
        assert_eq!(Rule::parse(false, "a *:* rwm").unwrap().major, None);
        assert!(Rule::parse(true, "c 1-3 r").is_none());
    }
}
