//! Linearizability checker for one key: a register holding `Option<u64>`
//! with read, write and compare-and-set.
//!
//! A history is linearizable if its operations can be put in one total order
//! that respects real time (an op that completed before another was invoked
//! comes first) and in which every op's outcome is what the register would
//! give. Indeterminate ops (`Ret::Unknown`) have no completion: they may take
//! effect at any point after their invocation, or never.
//!
//! The search is Wing & Gong's, with Lowe's memoization (as in Porcupine):
//! call and return events sorted by time in a doubly linked list; a depth-first
//! search linearizes any pending op whose call precedes the first remaining
//! return, lifts its events out of the list, and backtracks when nothing can be
//! placed before that return. A failed state (set of linearized ops, register
//! value) is remembered so no other path explores it again. Indeterminate ops
//! are kept in a second list, tried only after the determinate candidates, and
//! never required; a state that applied a superset of the indeterminate ops of
//! a failed state (same determinate ops, same value) is pruned too, since it can
//! only do less. Two more reductions keep indeterminate ops cheap: values no
//! op reads or compares against count as one value, and of several
//! indeterminate ops with the same call only the earliest invoked unused one
//! is tried. The search is iterative, so long histories cannot overflow the
//! stack.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A value of the register; None = the key is absent.
pub type Value = Option<u64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Read,
    Write(u64),
    /// Compare-and-set: if the current value equals Some(expect), set Some(new).
    Cas {
        expect: u64,
        new: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// A read completed and saw this value.
    Read(Value),
    /// A write was acknowledged.
    Written,
    /// The CAS compare held and the write was acknowledged.
    CasOk,
    /// The CAS compare did not hold (the value was not Some(expect)); nothing was written.
    CasFailed,
    /// Indeterminate: a timeout or connection error on a write or CAS. It may have
    /// taken effect at any point after its invocation, or never. (The suite never passes
    /// reads with Unknown; if it does, treat them as having no effect and no constraint.)
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub process: usize, // client id, for messages
    pub call: Call,
    pub ret: Ret,
    pub invoked: u64,   // nanoseconds since the run's start
    pub completed: u64, // nanoseconds; ignored (treated as +infinity) when ret == Unknown
}

#[derive(Clone, Debug)]
pub struct Violation {
    /// One line a human can act on, e.g. which operation could not be placed and
    /// what value the register could hold at that point.
    pub message: String,
    /// Indices (into the ops slice given to check) of the operations in the
    /// longest linearizable prefix found, then the op that could not be placed.
    pub longest_prefix: Vec<usize>,
}

/// Checks one key's history, starting from `initial`. Ok(()) if some total order of
/// the operations respects real time (an op that completed before another was invoked
/// comes first) and the register semantics; otherwise a Violation.
pub fn check(ops: &[Op], initial: Value) -> Result<(), Violation> {
    // u64::MAX steps is never reached in practice, so "unknown" cannot come back.
    check_bounded(ops, initial, u64::MAX).map(|_| ())
}

/// Same, but gives up after `budget` search steps and returns Ok(None) ("unknown"),
/// Ok(Some(())) for linearizable. The suite uses this with a large budget so a
/// pathological history cannot hang CI.
pub fn check_bounded(ops: &[Op], initial: Value, budget: u64) -> Result<Option<()>, Violation> {
    if let Some(i) = ops.iter().position(|op| !well_formed(op)) {
        return Err(Violation {
            message: format!(
                "op {i} is malformed: a {:?} call cannot return {:?} ({})",
                ops[i].call,
                ops[i].ret,
                Shown(i, &ops[i])
            ),
            longest_prefix: vec![i],
        });
    }
    Search::new(ops, initial).run(budget)
}

/// Whether the outcome fits the call (a write cannot return a read's value...).
fn well_formed(op: &Op) -> bool {
    matches!(
        (op.call, op.ret),
        (_, Ret::Unknown)
            | (Call::Read, Ret::Read(_))
            | (Call::Write(_), Ret::Written)
            | (Call::Cas { .. }, Ret::CasOk | Ret::CasFailed)
    )
}

/// The register after `op` from `value`, or None if the op's outcome is
/// impossible there. An indeterminate CAS whose compare fails is refused: a
/// no-op is the same as leaving it out, which is always allowed.
fn step(value: Value, op: &Op) -> Option<Value> {
    match (op.call, op.ret) {
        (Call::Read, Ret::Read(seen)) => (seen == value).then_some(value),
        (Call::Write(v), Ret::Written | Ret::Unknown) => Some(Some(v)),
        (Call::Cas { expect, new }, Ret::CasOk | Ret::Unknown) => {
            (value == Some(expect)).then_some(Some(new))
        }
        (Call::Cas { expect, .. }, Ret::CasFailed) => (value != Some(expect)).then_some(value),
        _ => None,
    }
}

/// An op for messages: index, process, call, outcome and times.
struct Shown<'a>(usize, &'a Op);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown(i, op) = *self;
        write!(
            f,
            "op {i}, process {}: {:?} -> {:?}, invoked {}ns",
            op.process, op.call, op.ret, op.invoked
        )?;
        if op.ret != Ret::Unknown {
            write!(f, ", completed {}ns", op.completed)?;
        }
        Ok(())
    }
}

/// How an op takes part in the search.
#[derive(Clone, Copy)]
enum Kind {
    /// Has a return event and must be linearized; its bit in the determinate set.
    Determinate(usize),
    /// Indeterminate write or CAS: optional; its bit in the indeterminate set.
    Indeterminate(usize),
    /// Indeterminate read: no effect and no constraint, left out.
    Ignored,
}

/// Where the next candidate is looked for. Determinate calls come first (in
/// list order up to the first return), then indeterminate calls invoked before
/// that return: trying an indeterminate op only when nothing else fits keeps
/// linearizable histories nearly backtrack-free.
#[derive(Clone, Copy)]
enum Cursor {
    Main(usize),
    Indeterminate { node: usize, limit: usize },
}

enum Next {
    /// An op to try, and where to continue if it does not work out.
    Candidate(usize, Cursor),
    /// Nothing more can be placed before this node (the first return).
    Exhausted(usize),
}

/// One linearized op on the search path.
struct Frame {
    op: usize,
    before: Value,
    resume: Cursor,
}

/// FxHash-style hasher: the keys are bitsets and no adversary picks them.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Fast = BuildHasherDefault<WordHasher>;

type Bits = Box<[u64]>;

/// Failed states: for each register value and set of determinate ops, the
/// minimal sets of indeterminate ops applied. A state is known to fail if one
/// of those is a subset of its own (it can do anything the new state can).
#[derive(Default)]
struct Failed {
    map: HashMap<u32, HashMap<Bits, Vec<Bits>, Fast>, Fast>,
}

impl Failed {
    fn covers(&self, value: u32, determinate: &[u64], indeterminate: &[u64]) -> bool {
        self.map
            .get(&value)
            .and_then(|by_set| by_set.get(determinate))
            .is_some_and(|sets| sets.iter().any(|s| subset(s, indeterminate)))
    }

    fn insert(&mut self, value: u32, determinate: &[u64], indeterminate: &[u64]) {
        let sets = self
            .map
            .entry(value)
            .or_default()
            .entry(determinate.into())
            .or_default();
        // Keep only minimal sets: the new one makes its supersets redundant.
        sets.retain(|s| !subset(indeterminate, s));
        sets.push(indeterminate.into());
    }
}

fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

struct Search<'a> {
    ops: &'a [Op],
    initial: Value,
    kinds: Vec<Kind>,
    /// Ids of the values some op tests for (reads, CAS compares): 0 is None,
    /// 1 every value nobody tests for, since those behave alike from any
    /// point on. States are remembered by id, so histories of unique values
    /// do not multiply states by values no one could tell apart.
    observed: HashMap<u64, u32, Fast>,
    /// For an indeterminate op, the previous indeterminate op invoked with
    /// the same call (up to value ids): it must be applied first. Either
    /// could stand in for the other, and the earlier one is always available.
    twin: Vec<usize>,
    /// Event nodes 1..=events in time order (their index is their position),
    /// then the sentinels.
    node_op: Vec<usize>,
    node_is_return: Vec<bool>,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    tail: usize,
    unknown_head: usize,
    determinate: Vec<u64>,
    indeterminate: Vec<u64>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Op], initial: Value) -> Search<'a> {
        let mut kinds = Vec::with_capacity(ops.len());
        let (mut determinate, mut indeterminate) = (0, 0);
        // (time, is_return, op): at equal times calls sort first, so an op
        // invoked at the instant another returns counts as concurrent with it.
        let mut events = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            let kind = match (op.ret, op.call) {
                (Ret::Unknown, Call::Read) => Kind::Ignored,
                (Ret::Unknown, _) => {
                    indeterminate += 1;
                    Kind::Indeterminate(indeterminate - 1)
                }
                _ => {
                    determinate += 1;
                    Kind::Determinate(determinate - 1)
                }
            };
            match kind {
                Kind::Ignored => {}
                Kind::Indeterminate(_) => events.push((op.invoked, false, i)),
                Kind::Determinate(_) => {
                    events.push((op.invoked, false, i));
                    // A completion before the invocation is a clock glitch:
                    // read it as instantaneous rather than impossible.
                    events.push((op.completed.max(op.invoked), true, i));
                }
            }
            kinds.push(kind);
        }
        events.sort_unstable();

        let mut observed = HashMap::default();
        for op in ops {
            let tested = match (op.call, op.ret) {
                (_, Ret::Read(Some(v))) | (Call::Cas { expect: v, .. }, _) => v,
                _ => continue,
            };
            let next_id = observed.len() as u32 + 2;
            observed.entry(tested).or_insert(next_id);
        }

        let n = events.len();
        let (head, tail, unknown_head, unknown_tail) = (0, n + 1, n + 2, n + 3);
        let mut search = Search {
            ops,
            initial,
            kinds,
            observed,
            twin: vec![usize::MAX; ops.len()],
            node_op: vec![usize::MAX; n + 4],
            node_is_return: vec![false; n + 4],
            call_node: vec![usize::MAX; ops.len()],
            return_node: vec![usize::MAX; ops.len()],
            next: vec![usize::MAX; n + 4],
            prev: vec![usize::MAX; n + 4],
            head,
            tail,
            unknown_head,
            determinate: vec![0; determinate.div_ceil(64)],
            indeterminate: vec![0; indeterminate.div_ceil(64)],
        };
        let (mut last, mut last_unknown) = (head, unknown_head);
        for (k, &(_, is_return, op)) in events.iter().enumerate() {
            let node = k + 1;
            search.node_op[node] = op;
            search.node_is_return[node] = is_return;
            let list_end = if matches!(search.kinds[op], Kind::Indeterminate(_)) {
                &mut last_unknown
            } else {
                &mut last
            };
            search.next[*list_end] = node;
            search.prev[node] = *list_end;
            *list_end = node;
            if is_return {
                search.return_node[op] = node;
            } else {
                search.call_node[op] = node;
            }
        }
        search.next[last] = tail;
        search.prev[tail] = last;
        search.next[last_unknown] = unknown_tail;
        search.prev[unknown_tail] = last_unknown;
        let mut last_of_class = HashMap::<(u32, u32), usize, Fast>::default();
        for &(_, _, op) in &events {
            if let Kind::Indeterminate(_) = search.kinds[op] {
                let class = match ops[op].call {
                    Call::Write(v) => (u32::MAX, search.id(Some(v))),
                    Call::Cas { expect, new } => (search.id(Some(expect)), search.id(Some(new))),
                    Call::Read => continue,
                };
                if let Some(earlier) = last_of_class.insert(class, op) {
                    search.twin[op] = earlier;
                }
            }
        }
        search
    }

    fn id(&self, value: Value) -> u32 {
        match value {
            None => 0,
            Some(v) => self.observed.get(&v).copied().unwrap_or(1),
        }
    }

    fn applied(&self, op: usize) -> bool {
        match self.kinds[op] {
            Kind::Determinate(b) => self.determinate[b / 64] & (1 << (b % 64)) != 0,
            Kind::Indeterminate(b) => self.indeterminate[b / 64] & (1 << (b % 64)) != 0,
            Kind::Ignored => false,
        }
    }

    /// Whether trying this indeterminate op here is pointless: it would not
    /// change the register (as far as any op can tell), or its twin is unused.
    fn redundant(&self, op: usize, before: Value, after: Value) -> bool {
        matches!(self.kinds[op], Kind::Indeterminate(_))
            && (self.id(before) == self.id(after)
                || (self.twin[op] != usize::MAX && !self.applied(self.twin[op])))
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Undoes `unlink`; unlinks must be undone in reverse order.
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        self.prev[n] = node;
    }

    /// Takes a linearized op's events out of the lists and marks it done.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if self.return_node[op] != usize::MAX {
            self.unlink(self.return_node[op]);
        }
        self.toggle(op);
    }

    fn unlift(&mut self, op: usize) {
        self.toggle(op);
        if self.return_node[op] != usize::MAX {
            self.relink(self.return_node[op]);
        }
        self.relink(self.call_node[op]);
    }

    fn toggle(&mut self, op: usize) {
        match self.kinds[op] {
            Kind::Determinate(b) => flip(&mut self.determinate, b),
            Kind::Indeterminate(b) => flip(&mut self.indeterminate, b),
            Kind::Ignored => {}
        }
    }

    fn start(&self) -> Cursor {
        Cursor::Main(self.next[self.head])
    }

    fn advance(&self, mut cursor: Cursor) -> Next {
        loop {
            match cursor {
                Cursor::Main(node) if node == self.tail || self.node_is_return[node] => {
                    cursor = Cursor::Indeterminate {
                        node: self.next[self.unknown_head],
                        limit: node,
                    };
                }
                Cursor::Main(node) => {
                    return Next::Candidate(self.node_op[node], Cursor::Main(self.next[node]));
                }
                // Node numbers are positions in time order, and the sentinel
                // ends sort last, so this also stops at the end of the list.
                Cursor::Indeterminate { node, limit } if node < limit => {
                    return Next::Candidate(
                        self.node_op[node],
                        Cursor::Indeterminate {
                            node: self.next[node],
                            limit,
                        },
                    );
                }
                Cursor::Indeterminate { limit, .. } => return Next::Exhausted(limit),
            }
        }
    }

    fn done(&self) -> bool {
        self.next[self.head] == self.tail
    }

    fn run(mut self, budget: u64) -> Result<Option<()>, Violation> {
        let mut failed = Failed::default();
        let mut path: Vec<Frame> = Vec::new();
        let mut value = self.initial;
        let mut cursor = self.start();
        let mut steps = 0u64;
        // Longest path that got stuck: its ops, the op whose return stopped
        // it, and the register value there.
        let mut longest: Option<(Vec<usize>, Option<usize>, Value)> = None;
        if self.done() {
            return Ok(Some(()));
        }
        loop {
            if steps >= budget {
                return Ok(None);
            }
            steps += 1;
            match self.advance(cursor) {
                Next::Candidate(op, resume) => {
                    cursor = resume;
                    let Some(after) = step(value, &self.ops[op]) else {
                        continue;
                    };
                    if self.redundant(op, value, after) {
                        continue;
                    }
                    self.toggle(op);
                    let known_bad =
                        failed.covers(self.id(after), &self.determinate, &self.indeterminate);
                    self.toggle(op);
                    if known_bad {
                        continue;
                    }
                    self.lift(op);
                    path.push(Frame {
                        op,
                        before: value,
                        resume,
                    });
                    value = after;
                    if self.done() {
                        return Ok(Some(()));
                    }
                    cursor = self.start();
                }
                Next::Exhausted(limit) => {
                    if longest
                        .as_ref()
                        .is_none_or(|(p, _, _)| path.len() > p.len())
                    {
                        let stuck = (limit != self.tail).then(|| self.node_op[limit]);
                        longest = Some((path.iter().map(|f| f.op).collect(), stuck, value));
                    }
                    failed.insert(self.id(value), &self.determinate, &self.indeterminate);
                    let Some(frame) = path.pop() else {
                        return Err(self.violation(longest));
                    };
                    self.unlift(frame.op);
                    value = frame.before;
                    cursor = frame.resume;
                }
            }
        }
    }

    fn violation(&self, longest: Option<(Vec<usize>, Option<usize>, Value)>) -> Violation {
        let (mut prefix, stuck, value) = longest.unwrap_or((Vec::new(), None, self.initial));
        let message = match stuck {
            Some(op) => {
                prefix.push(op);
                format!(
                    "not linearizable: the search got furthest with {} ops linearized, the register \
                     then holding {value:?}, and could not get past the completion of {}",
                    prefix.len() - 1,
                    Shown(op, &self.ops[op])
                )
            }
            None => format!(
                "not linearizable: stuck after {} ops with the register at {value:?}",
                prefix.len()
            ),
        };
        Violation {
            message,
            longest_prefix: prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn op(process: usize, call: Call, ret: Ret, invoked: u64, completed: u64) -> Op {
        Op {
            process,
            call,
            ret,
            invoked,
            completed,
        }
    }

    fn read(p: usize, seen: Value, invoked: u64, completed: u64) -> Op {
        op(p, Call::Read, Ret::Read(seen), invoked, completed)
    }

    fn write(p: usize, v: u64, invoked: u64, completed: u64) -> Op {
        op(p, Call::Write(v), Ret::Written, invoked, completed)
    }

    fn cas(p: usize, expect: u64, new: u64, ret: Ret, invoked: u64, completed: u64) -> Op {
        op(p, Call::Cas { expect, new }, ret, invoked, completed)
    }

    fn lost_write(p: usize, v: u64, invoked: u64) -> Op {
        op(p, Call::Write(v), Ret::Unknown, invoked, 0)
    }

    fn rejects(ops: &[Op], initial: Value) -> Violation {
        match check(ops, initial) {
            Ok(()) => panic!("accepted a non-linearizable history: {ops:?}"),
            Err(v) => v,
        }
    }

    #[test]
    fn empty_and_sequential_histories_pass() {
        assert!(check(&[], None).is_ok());
        let ops = [
            read(0, None, 0, 1),
            write(0, 1, 2, 3),
            read(1, Some(1), 4, 5),
            cas(1, 1, 2, Ret::CasOk, 6, 7),
            cas(0, 1, 3, Ret::CasFailed, 8, 9),
            read(0, Some(2), 10, 11),
        ];
        assert!(check(&ops, None).is_ok());
        assert!(check(&[read(0, Some(7), 0, 1)], Some(7)).is_ok());
    }

    #[test]
    fn concurrent_ops_may_take_effect_in_another_order() {
        // Write 2 must take effect before write 1, though both were invoked
        // together and write 1 is listed (and sorted) first.
        let ops = [
            write(0, 1, 0, 10),
            write(1, 2, 0, 10),
            read(2, Some(1), 11, 12),
        ];
        assert!(check(&ops, None).is_ok());

        // The CAS chain only works in the reverse of the invocation order.
        let ops = [
            cas(0, 2, 3, Ret::CasOk, 0, 10),
            cas(1, 1, 2, Ret::CasOk, 1, 10),
            write(2, 1, 2, 10),
            read(3, Some(3), 11, 12),
        ];
        assert!(check(&ops, None).is_ok());

        // A read that returns early may still have seen the old value, and
        // an overlapping read the new one.
        let ops = [
            write(0, 1, 0, 100),
            read(1, Some(1), 10, 20),
            read(2, None, 5, 50),
        ];
        assert!(check(&ops, None).is_ok());
    }

    #[test]
    fn equal_timestamps_overlap() {
        // The read is invoked at the instant the write completes: concurrent.
        assert!(check(&[write(0, 1, 0, 10), read(1, None, 10, 20)], None).is_ok());
        rejects(&[write(0, 1, 0, 10), read(1, None, 11, 20)], None);
    }

    #[test]
    fn rejects_stale_read() {
        let v = rejects(&[write(0, 1, 0, 10), read(1, None, 20, 30)], None);
        assert_eq!(v.longest_prefix, vec![0, 1], "{}", v.message);
        assert!(v.message.contains("op 1"), "{}", v.message);
        assert!(v.message.contains("Some(1)"), "{}", v.message);
    }

    #[test]
    fn rejects_lost_write() {
        // The read started after write 2 was acknowledged but saw write 1.
        let ops = [
            write(0, 1, 0, 10),
            write(1, 2, 20, 30),
            read(2, Some(2), 35, 38),
            read(0, Some(1), 40, 50),
        ];
        rejects(&ops, None);
        // And an acknowledged write that later reads never see.
        rejects(
            &[
                write(0, 1, 0, 10),
                read(1, Some(1), 11, 12),
                read(1, None, 13, 14),
            ],
            None,
        );
    }

    #[test]
    fn rejects_bad_cas() {
        // CasOk, but the value could only be 1.
        rejects(&[cas(0, 2, 3, Ret::CasOk, 0, 1)], Some(1));
        rejects(&[cas(0, 2, 3, Ret::CasOk, 0, 1)], None);
        // CasFailed, but the value must have been 1.
        rejects(
            &[write(0, 1, 0, 1), cas(1, 1, 2, Ret::CasFailed, 2, 3)],
            None,
        );
        // A successful CAS must show in later reads.
        rejects(
            &[cas(0, 1, 2, Ret::CasOk, 0, 1), read(1, Some(1), 2, 3)],
            Some(1),
        );
        // Fine when a concurrent write can explain either outcome.
        let ops = [write(0, 5, 0, 10), cas(1, 1, 2, Ret::CasFailed, 2, 3)];
        assert!(check(&ops, Some(1)).is_ok());
        let ops = [write(0, 1, 0, 10), cas(1, 1, 2, Ret::CasOk, 2, 3)];
        assert!(check(&ops, None).is_ok());
    }

    #[test]
    fn unknown_writes_may_or_may_not_take_effect() {
        // Seen later, even long after the client gave up on it.
        let ops = [
            lost_write(0, 5, 0),
            read(1, None, 100, 110),
            read(1, Some(5), 200, 210),
        ];
        assert!(check(&ops, None).is_ok());
        // Never seen.
        let ops = [
            lost_write(0, 5, 0),
            read(1, None, 100, 110),
            read(1, None, 200, 210),
        ];
        assert!(check(&ops, None).is_ok());
        // Never seen, though a later write is followed by a read.
        let ops = [
            lost_write(0, 5, 0),
            write(1, 6, 10, 20),
            read(1, Some(6), 30, 40),
        ];
        assert!(check(&ops, None).is_ok());
        // But not seen before it was invoked...
        rejects(&[read(1, Some(5), 0, 10), lost_write(0, 5, 20)], None);
        // ...nor taking effect twice.
        let ops = [
            lost_write(0, 5, 0),
            read(1, Some(5), 10, 20),
            write(1, 6, 30, 40),
            read(1, Some(5), 50, 60),
        ];
        rejects(&ops, None);
        // An unknown CAS applies only where its compare holds.
        let ops = [cas(0, 1, 2, Ret::Unknown, 0, 0), read(1, Some(2), 10, 20)];
        assert!(check(&ops, Some(1)).is_ok());
        assert!(check(&ops[..1], Some(1)).is_ok());
        rejects(&ops, Some(3));
        // One that can never apply must be left out, not put last.
        let ops = [cas(0, 1, 2, Ret::Unknown, 0, 0), read(1, None, 10, 20)];
        assert!(check(&ops, None).is_ok());
        // An unknown read constrains nothing.
        assert!(check(&[op(0, Call::Read, Ret::Unknown, 0, 0)], None).is_ok());
    }

    #[test]
    fn rejects_value_never_written() {
        let v = rejects(&[write(0, 1, 0, 10), read(1, Some(7), 0, 10)], None);
        assert_eq!(v.longest_prefix.last(), Some(&1), "{}", v.message);
        rejects(&[lost_write(0, 1, 0), read(1, Some(7), 5, 10)], None);
    }

    #[test]
    fn rejects_malformed_ops() {
        let v = rejects(&[op(0, Call::Write(1), Ret::CasOk, 0, 1)], None);
        assert_eq!(v.longest_prefix, vec![0]);
    }

    #[test]
    fn long_sequential_history_does_not_overflow_the_stack() {
        let ops: Vec<Op> = (0..20_000u64)
            .map(|i| {
                if i % 2 == 0 {
                    write(0, i, 2 * i, 2 * i + 1)
                } else {
                    read(0, Some(i - 1), 2 * i, 2 * i + 1)
                }
            })
            .collect();
        assert!(check(&ops, None).is_ok());
        let mut bad = ops.clone();
        bad[19_999].ret = Ret::Read(Some(0));
        let v = rejects(&bad, None);
        assert_eq!(v.longest_prefix.len(), 20_000);
    }

    /// A tiny deterministic PRNG (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A history of a real linearizable register: each op takes effect at a
    /// random instant inside its interval (an indeterminate one at any instant
    /// after its invocation, or never), and outcomes are computed by applying
    /// the ops in that order. Values are small so histories are ambiguous.
    fn simulate(
        seed: u64,
        processes: usize,
        per_process: usize,
        unknown_in: u64,
        unique: bool,
    ) -> Vec<Op> {
        let mut rng = Rng(seed | 1);
        let mut ops = Vec::new();
        let mut effect_at = Vec::new();
        let mut written = 0;
        for process in 0..processes {
            let mut now = rng.below(50);
            for _ in 0..per_process {
                let invoked = now + rng.below(30);
                let completed = invoked + 1 + rng.below(200);
                // Either a few values, so many ops are ambiguous, or unique
                // ones as the suite writes (a CAS expects a recent value).
                let mut value = || {
                    written += 1;
                    if unique { written } else { rng.below(5) }
                };
                let new = value();
                let call = match rng.below(10) {
                    0..=4 => Call::Read,
                    5..=7 => Call::Write(new),
                    _ if unique => Call::Cas {
                        expect: new.saturating_sub(1 + rng.below(8)),
                        new,
                    },
                    _ => Call::Cas {
                        expect: rng.below(5),
                        new,
                    },
                };
                let unknown = call != Call::Read && rng.below(unknown_in) == 0;
                let at = if !unknown {
                    Some(invoked + rng.below(completed - invoked + 1))
                } else if rng.below(2) == 0 {
                    Some(invoked + rng.below(5 * (completed - invoked)))
                } else {
                    None
                };
                let ret = if unknown { Ret::Unknown } else { Ret::Written };
                effect_at.push(at);
                ops.push(op(process, call, ret, invoked, completed));
                now = completed;
            }
        }
        let mut order: Vec<(u64, usize)> = effect_at
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.map(|t| (t, i)))
            .collect();
        order.sort_unstable();
        let mut value = None;
        for (_, i) in order {
            let o = &mut ops[i];
            let ret = match o.call {
                Call::Read => Ret::Read(value),
                Call::Write(v) => {
                    value = Some(v);
                    Ret::Written
                }
                Call::Cas { expect, new } if value == Some(expect) => {
                    value = Some(new);
                    Ret::CasOk
                }
                Call::Cas { .. } => Ret::CasFailed,
            };
            if o.ret != Ret::Unknown {
                o.ret = ret;
            }
        }
        ops
    }

    #[test]
    fn random_linearizable_histories_pass_and_corrupted_ones_fail() {
        for seed in 1..=40u64 {
            // Unique values as the suite writes them, or a few values: then
            // indeterminate ops make rejection exponential, so use fewer.
            let unique = seed % 2 == 0;
            let unknown_in = if unique { 8 } else { 40 };
            let ops = simulate(seed * 7919, 2 + (seed % 5) as usize, 60, unknown_in, unique);
            if let Err(v) = check(&ops, None) {
                panic!("seed {seed}: linearizable history rejected: {}", v.message);
            }
            let mut rng = Rng(seed);
            let reads: Vec<usize> = (0..ops.len())
                .filter(|&i| matches!(ops[i].ret, Ret::Read(_)))
                .collect();
            let victim = reads[rng.below(reads.len() as u64) as usize];
            let mut bad = ops.clone();
            // No op ever writes this value.
            bad[victim].ret = Ret::Read(Some(1_000));
            match check(&bad, None) {
                Ok(()) => panic!("seed {seed}: corrupted read {victim} accepted"),
                Err(v) => {
                    let (blocked, prefix) = v.longest_prefix.split_last().expect("an op");
                    assert!(!prefix.contains(&victim), "seed {seed}: {}", v.message);
                    assert!(*blocked < bad.len());
                }
            }
        }
    }

    #[test]
    fn two_thousand_ops_are_fast() {
        // About 5 clients, 2,000 ops, ~20 indeterminate writes and CASes.
        let ops = simulate(0x5eed, 5, 400, 40, true);
        let unknown = ops.iter().filter(|o| o.ret == Ret::Unknown).count();
        let started = Instant::now();
        let result = check(&ops, None);
        let took = started.elapsed();
        eprintln!("2,000 ops ({unknown} indeterminate): linearizable in {took:?}");
        assert!(result.is_ok());

        let mut bad = ops.clone();
        let victim = bad
            .iter()
            .rposition(|o| matches!(o.ret, Ret::Read(_)))
            .expect("a read");
        bad[victim].ret = Ret::Read(Some(1_000));
        let started = Instant::now();
        let result = check(&bad, None);
        eprintln!(
            "2,000 ops, last read corrupted: rejected in {:?}",
            started.elapsed()
        );
        assert!(result.is_err());
    }

    #[test]
    fn bounded_check_gives_up_on_a_hard_history() {
        // 24 concurrent writes, then a read of a value none wrote: rejecting it
        // means trying every order of the writes (2^24 memoized states).
        let mut ops: Vec<Op> = (0..24).map(|i| write(i as usize, i, 0, 100)).collect();
        ops.push(read(0, Some(1_000), 200, 300));
        assert!(matches!(check_bounded(&ops, None, 10_000), Ok(None)));
        // The same writes with a possible read are quick to accept.
        ops[24].ret = Ret::Read(Some(23));
        assert!(matches!(check_bounded(&ops, None, 10_000), Ok(Some(()))));
        // A budget does not hide a violation found within it.
        let stale = [write(0, 1, 0, 10), read(1, None, 20, 30)];
        assert!(check_bounded(&stale, None, 1_000).is_err());
    }
}
