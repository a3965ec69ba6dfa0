//! The subset of Python's pickle format that PyTorch's `torch.save` (and LitGPT's
//! `incremental_save`) writes for state dicts: dicts, tuples, lists, strings, numbers, globals,
//! persistent storage ids and tensor rebuild calls. Anything else is a typed error, never a panic;
//! sizes are bounded by the input length.

use std::collections::HashMap;

/// A tensor as described by the pickle: which storage, at which element offset, shape and strides.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Key of the storage record (`data/<key>` in the zip).
    pub key: String,
    /// PyTorch storage type name, e.g. `FloatStorage`, `BFloat16Storage`.
    pub storage_type: String,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(usize),
    Tuple(Vec<Val>),
    List(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(String, String),
    Storage {
        key: String,
        storage_type: String,
    },
    Tensor(TensorRef),
    /// The result of calling something we do not model (kept opaque).
    Object,
    Mark,
}

/// Parses pickle `data` and returns every tensor with its dotted path (`a.b.weight`).
pub fn tensors(data: &[u8]) -> Result<Vec<(String, TensorRef)>, String> {
    let root = run(data)?;
    let mut out = Vec::new();
    flatten("", &root, &mut out, 0)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    v: &Val,
    out: &mut Vec<(String, TensorRef)>,
    depth: usize,
) -> Result<(), String> {
    if depth > 64 {
        return Err("containers nested more than 64 deep".into());
    }
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Val::Tensor(t) => out.push((prefix.to_string(), t.clone())),
        Val::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    Val::Str(s) => s.clone(),
                    Val::Int(i) => i.to_string(),
                    _ => continue,
                };
                flatten(&join(&key), v, out, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(e) => {
                let s = &self.data[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(format!("truncated pickle at byte {}", self.pos)),
        }
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("unterminated GLOBAL line")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".into())
    }
}

fn to_usize(v: &Val, what: &str) -> Result<usize, String> {
    match v {
        Val::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what}: expected a non-negative int, got {other:?}"
        )),
    }
}

fn to_dims(v: &Val, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Val::Tuple(xs) | Val::List(xs) => xs.iter().map(|x| to_usize(x, what)).collect(),
        other => Err(format!("{what}: expected a tuple, got {other:?}")),
    }
}

fn reduce(callable: Val, args: Val) -> Result<Val, String> {
    let Val::Global(module, name) = &callable else {
        return Ok(Val::Object);
    };
    let args = match args {
        Val::Tuple(a) => a,
        _ => return Ok(Val::Object),
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(format!("{name} needs 4 arguments, got {}", args.len()));
            }
            let Val::Storage { key, storage_type } = &args[0] else {
                return Err(format!(
                    "{name}: first argument is not a storage ({:?})",
                    args[0]
                ));
            };
            let shape = to_dims(&args[2], "tensor size")?;
            let stride = to_dims(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "size {shape:?} and stride {stride:?} differ in rank"
                ));
            }
            Ok(Val::Tensor(TensorRef {
                key: key.clone(),
                storage_type: storage_type.clone(),
                offset: to_usize(&args[1], "storage offset")?,
                shape,
                stride,
            }))
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => {
            Ok(args.into_iter().next().unwrap_or(Val::None))
        }
        ("collections", "OrderedDict") => Ok(Val::Dict(Vec::new())),
        _ => Ok(Val::Object),
    }
}

fn pop(stack: &mut Vec<Val>) -> Result<Val, String> {
    stack
        .pop()
        .ok_or_else(|| "pickle stack underflow".to_string())
}

fn pop_mark(stack: &mut Vec<Val>) -> Result<Vec<Val>, String> {
    let m = stack
        .iter()
        .rposition(|v| matches!(v, Val::Mark))
        .ok_or("MARK expected on the pickle stack")?;
    let items = stack.split_off(m + 1);
    stack.pop();
    Ok(items)
}

fn run(data: &[u8]) -> Result<Val, String> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Val> = Vec::new();
    let mut memo: HashMap<u32, Val> = HashMap::new();
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.u64()?; // FRAME
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Val::Mark),
            b'}' => stack.push(Val::Dict(Vec::new())),
            b']' => stack.push(Val::List(Vec::new())),
            b')' => stack.push(Val::Tuple(Vec::new())),
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool(true)),
            0x89 => stack.push(Val::Bool(false)),
            b'K' => stack.push(Val::Int(r.u8()? as i64)),
            b'M' => stack.push(Val::Int(r.u16()? as i64)),
            b'J' => stack.push(Val::Int(r.u32()? as i32 as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(format!("LONG1 of {n} bytes is too large"));
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v));
            }
            b'G' => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                stack.push(Val::Float(f64::from_be_bytes(a)));
            }
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Val::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Val::Str(r.string(n)?));
            }
            0x8d => {
                let n = usize::try_from(r.u64()?).map_err(|_| "string too long")?;
                stack.push(Val::Str(r.string(n)?));
            }
            b'C' => {
                let n = r.u8()? as usize;
                r.take(n)?;
                stack.push(Val::Bytes(n));
            }
            b'B' => {
                let n = r.u32()? as usize;
                r.take(n)?;
                stack.push(Val::Bytes(n));
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Val::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => stack.push(Val::Global(m, n)),
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Val::Tuple(items));
            }
            0x85 => {
                let a = pop(&mut stack)?;
                stack.push(Val::Tuple(vec![a]));
            }
            0x86 => {
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Val::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = pop(&mut stack)?;
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Val::Tuple(vec![a, b, c]));
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(k, stack.last().cloned().ok_or("BINPUT on an empty stack")?);
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("LONG_BINPUT on an empty stack")?,
                );
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, stack.last().cloned().ok_or("MEMOIZE on an empty stack")?);
            }
            b'h' => {
                let k = r.u8()? as u32;
                stack.push(
                    memo.get(&k)
                        .cloned()
                        .ok_or(format!("BINGET of unknown memo {k}"))?,
                );
            }
            b'j' => {
                let k = r.u32()?;
                stack.push(
                    memo.get(&k)
                        .cloned()
                        .ok_or(format!("LONG_BINGET of unknown memo {k}"))?,
                );
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                let Val::Tuple(p) = pid else {
                    return Err("persistent id is not a tuple".into());
                };
                let storage_type = match p.get(1) {
                    Some(Val::Global(_, n)) => n.clone(),
                    other => return Err(format!("persistent id: storage type {other:?}")),
                };
                let key = match p.get(2) {
                    Some(Val::Str(s)) => s.clone(),
                    Some(Val::Int(i)) => i.to_string(),
                    other => return Err(format!("persistent id: storage key {other:?}")),
                };
                if !matches!(p.first(), Some(Val::Str(s)) if s == "storage") {
                    return Err("persistent id is not a storage".into());
                }
                stack.push(Val::Storage { key, storage_type });
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(callable, args)?);
            }
            0x81 => {
                let _args = pop(&mut stack)?;
                let _cls = pop(&mut stack)?;
                stack.push(Val::Object);
            }
            b'b' => {
                pop(&mut stack)?; // BUILD: state ignored (e.g. `_metadata`)
                if stack.is_empty() {
                    return Err("BUILD on an empty stack".into());
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::Dict(d)) => d.push((k, v)),
                    Some(Val::Object) => {}
                    _ => return Err("SETITEM on a non-dict".into()),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                match stack.last_mut() {
                    Some(Val::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    Some(Val::Object) => {}
                    _ => return Err("SETITEMS on a non-dict".into()),
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::List(l)) => l.push(v),
                    Some(Val::Object) => {}
                    _ => return Err("APPEND on a non-list".into()),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::List(l)) => l.extend(items),
                    Some(Val::Object) => {}
                    _ => return Err("APPENDS on a non-list".into()),
                }
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    r.pos - 1
                ))
            }
        }
        if stack.len() > 1 << 20 {
            return Err("pickle stack grew beyond 1M entries".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_without_panicking() {
        for bytes in [
            &b""[..],
            b"\x80",
            b"\x80\x02}q\x00(",
            b"\xff\xff",
            b"Q",
            b"(t.",
            b"R.",
        ] {
            assert!(tensors(bytes).is_err() || tensors(bytes).unwrap().is_empty());
        }
    }

    #[test]
    fn parses_a_tiny_state_dict() {
        // {"w": _rebuild_tensor_v2(("storage", FloatStorage, "0", "cpu", 6), 0, (2, 3), (3, 1), False, OrderedDict())}
        let mut p = vec![0x80, 2, b'}', b'X'];
        p.extend(1u32.to_le_bytes());
        p.push(b'w');
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.extend(b"(X");
        p.extend(7u32.to_le_bytes());
        p.extend(b"storagectorch\nFloatStorage\nX");
        p.extend(1u32.to_le_bytes());
        p.extend(b"0X");
        p.extend(3u32.to_le_bytes());
        p.extend(
            b"cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.",
        );
        let t = tensors(&p).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "w");
        assert_eq!(t[0].1.shape, vec![2, 3]);
        assert_eq!(t[0].1.stride, vec![3, 1]);
        assert_eq!(t[0].1.storage_type, "FloatStorage");
    }
}
