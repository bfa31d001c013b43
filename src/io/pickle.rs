//! A small unpickler for the files PyTorch writes: `torch.save` archives (state_dicts,
//! training checkpoints, saved tensors) and TorchScript's `data.pkl`.
//!
//! It runs the pickle opcodes of protocols 0 to 5 that those files use and builds a [`Value`]
//! tree, calling nothing: a class or function named in the pickle (`GLOBAL`) stays a name,
//! and applying it (`REDUCE`, `NEWOBJ`, `BUILD`) records the call, except for the few
//! reconstructors this crate understands (tensors, parameters, `OrderedDict`). Objects live in
//! an arena so that the memo shares them as pickle does (a dict filled after it was memoised is
//! seen filled everywhere).

use std::collections::HashMap;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True`, `False`.
    Bool(bool),
    /// An integer (Python's unbounded ints beyond i64 are refused).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict (or `OrderedDict`), in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A class or function named by the pickle: `module.name`.
    Global {
        /// The module, e.g. `torch._utils`.
        module: String,
        /// The name in it, e.g. `_rebuild_tensor_v2`.
        name: String,
    },
    /// A persistent id (how torch refers to a storage in its archive).
    Persistent(Box<Value>),
    /// An object made by a class or function this reader does not run: the callable, its
    /// arguments, and the state a later `BUILD` gave it.
    Object {
        /// The class or function (a [`Value::Global`]).
        class: Box<Value>,
        /// The arguments it was called with.
        args: Vec<Value>,
        /// The state `BUILD` set (usually a dict of attributes), if any.
        state: Option<Box<Value>>,
    },
    /// A tensor: a view of a storage of the archive.
    Tensor(TensorRef),
}

/// A tensor as `torch._utils._rebuild_tensor_v2` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage's key in the archive (`data/KEY`).
    pub storage: String,
    /// The storage's type name (`FloatStorage`, `ComplexFloatStorage`, ...).
    pub storage_type: String,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Its strides, in elements.
    pub stride: Vec<usize>,
}

impl Value {
    /// The entry `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => {
                entries.iter().find(|(k, _)| matches!(k, Value::Str(text) if text == key)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// The string, for a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }
}

/// What went wrong while unpickling.
pub type PickleError = String;

/// Objects the machine has made; the stack and the memo hold indices into it.
#[derive(Default)]
struct Arena {
    items: Vec<Item>,
}

/// An arena entry: a leaf value, or a container of other entries.
#[derive(Debug, Clone)]
enum Item {
    Leaf(Value),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Persistent(usize),
    Object { class: usize, args: Vec<usize>, state: Option<usize> },
}

/// Nesting deeper than this is refused (a malicious file could otherwise recurse forever).
const MAX_DEPTH: usize = 256;

impl Arena {
    fn push(&mut self, item: Item) -> usize {
        self.items.push(item);
        self.items.len() - 1
    }

    fn leaf(&mut self, value: Value) -> usize {
        self.push(Item::Leaf(value))
    }

    fn value(&self, index: usize, depth: usize) -> Result<Value, PickleError> {
        if depth > MAX_DEPTH {
            return Err("the pickle nests too deeply".into());
        }
        let all = |indices: &[usize]| {
            indices.iter().map(|&i| self.value(i, depth + 1)).collect::<Result<Vec<_>, _>>()
        };
        Ok(match &self.items[index] {
            Item::Leaf(value) => value.clone(),
            Item::Tuple(items) => Value::Tuple(all(items)?),
            Item::List(items) => Value::List(all(items)?),
            Item::Dict(entries) => Value::Dict(
                entries
                    .iter()
                    .map(|&(k, v)| Ok((self.value(k, depth + 1)?, self.value(v, depth + 1)?)))
                    .collect::<Result<_, PickleError>>()?,
            ),
            Item::Persistent(id) => Value::Persistent(Box::new(self.value(*id, depth + 1)?)),
            Item::Object { class, args, state } => {
                let class = self.value(*class, depth + 1)?;
                let args = all(args)?;
                let state = match state {
                    Some(state) => Some(Box::new(self.value(*state, depth + 1)?)),
                    None => None,
                };
                reconstruct(class, args, state)?
            }
        })
    }
}

/// Applies the reconstructors this reader understands; anything else stays an object.
fn reconstruct(class: Value, args: Vec<Value>, state: Option<Box<Value>>) -> Result<Value, PickleError> {
    let Value::Global { module, name } = &class else {
        return Ok(Value::Object { class: Box::new(class), args, state });
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => rebuild_tensor(&args),
        // A parameter is its tensor.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            args.into_iter().next().ok_or_else(|| "_rebuild_parameter without arguments".into())
        }
        // (function, type, args, state): the function applied to the args.
        ("torch._tensor", "_rebuild_from_type_v2") => match args.as_slice() {
            [function, _, Value::Tuple(inner), ..] => reconstruct(function.clone(), inner.clone(), None),
            _ => Err("_rebuild_from_type_v2 with unexpected arguments".into()),
        },
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        _ => Ok(Value::Object { class: Box::new(class), args, state }),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
fn rebuild_tensor(args: &[Value]) -> Result<Value, PickleError> {
    let usizes = |value: &Value, what: &str| match value {
        Value::Tuple(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                _ => Err(format!("a tensor's {what} holds {item:?}")),
            })
            .collect::<Result<Vec<_>, _>>(),
        _ => Err(format!("a tensor's {what} is {value:?}")),
    };
    let [storage, Value::Int(offset), size, stride, ..] = args else {
        return Err(format!("a tensor rebuilt from {} unexpected arguments", args.len()));
    };
    // ('storage', <class torch.XStorage>, key, location, numel)
    let Value::Persistent(id) = storage else {
        return Err("a tensor whose storage is not in the archive".into());
    };
    let Value::Tuple(parts) = id.as_ref() else {
        return Err("an unreadable storage reference".into());
    };
    let (storage_type, key) = match parts.as_slice() {
        [Value::Str(kind), Value::Global { name, .. }, key, ..] if kind == "storage" => (name.clone(), key),
        _ => return Err(format!("an unreadable storage reference {parts:?}")),
    };
    let storage = match key {
        Value::Str(key) => key.clone(),
        Value::Int(key) => key.to_string(),
        other => return Err(format!("a storage key {other:?}")),
    };
    let (shape, stride) = (usizes(size, "size")?, usizes(stride, "stride")?);
    if shape.len() != stride.len() || *offset < 0 {
        return Err("a tensor whose size, stride and offset do not agree".into());
    }
    Ok(Value::Tensor(TensorRef { storage, storage_type, offset: *offset as usize, shape, stride }))
}

/// Reads pickle `bytes` into a value.
pub fn unpickle(bytes: &[u8]) -> Result<Value, PickleError> {
    Machine {
        bytes,
        at: 0,
        arena: Arena::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    arena: Arena,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
}

impl Machine<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], PickleError> {
        let end = self.at.checked_add(count).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("the pickle ends inside an opcode at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn uint(&mut self, count: usize) -> Result<u64, PickleError> {
        Ok(self.take(count)?.iter().rev().fold(0u64, |value, &byte| (value << 8) | u64::from(byte)))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.bytes[self.at..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("the pickle ends inside a text opcode")?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(text)
    }

    fn pop(&mut self) -> Result<usize, PickleError> {
        self.stack.pop().ok_or_else(|| "the pickle pops an empty stack".into())
    }

    fn top(&self) -> Result<usize, PickleError> {
        self.stack.last().copied().ok_or_else(|| "the pickle reads an empty stack".into())
    }

    /// The items above the last mark, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let mark = self.marks.pop().ok_or("the pickle closes a mark it never opened")?;
        if mark > self.stack.len() {
            return Err("the pickle's mark lies above its stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn string(&mut self, length: usize) -> Result<usize, PickleError> {
        let text =
            String::from_utf8(self.take(length)?.to_vec()).map_err(|_| "a string that is not UTF-8")?;
        Ok(self.arena.leaf(Value::Str(text)))
    }

    fn int(&mut self, value: i64) -> usize {
        self.arena.leaf(Value::Int(value))
    }

    /// Two's complement little-endian of `length` bytes.
    fn long(&mut self, length: usize) -> Result<usize, PickleError> {
        if length > 8 {
            return Err("an integer wider than 64 bits".into());
        }
        let bytes = self.take(length)?;
        let mut value: i64 = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            value |= i64::from(byte) << (8 * i);
        }
        if length > 0 && length < 8 && bytes[length - 1] & 0x80 != 0 {
            value -= 1i64 << (8 * length);
        }
        Ok(self.int(value))
    }

    fn memoize(&mut self, key: u64) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn recall(&mut self, key: u64) -> Result<(), PickleError> {
        let index =
            *self.memo.get(&key).ok_or_else(|| format!("the pickle recalls memo {key}, never stored"))?;
        self.stack.push(index);
        Ok(())
    }

    fn global(&mut self, module: String, name: String) -> usize {
        self.arena.leaf(Value::Global { module, name })
    }

    fn call(&mut self, class: usize, args: usize) -> Result<(), PickleError> {
        let args = match &self.arena.items[args] {
            Item::Tuple(items) => items.clone(),
            Item::Leaf(Value::None) => Vec::new(),
            other => return Err(format!("call arguments are not a tuple: {other:?}")),
        };
        // An OrderedDict must be a dict that later SETITEMS fill.
        let is_ordered_dict = matches!(
            &self.arena.items[class],
            Item::Leaf(Value::Global { module, name }) if module == "collections" && name == "OrderedDict"
        );
        let item =
            if is_ordered_dict { Item::Dict(Vec::new()) } else { Item::Object { class, args, state: None } };
        let index = self.arena.push(item);
        self.stack.push(index);
        Ok(())
    }

    fn set_items(&mut self, target: usize, pairs: &[usize]) -> Result<(), PickleError> {
        if !pairs.len().is_multiple_of(2) {
            return Err("a dict update with an odd number of items".into());
        }
        let entries: Vec<(usize, usize)> = pairs.chunks_exact(2).map(|pair| (pair[0], pair[1])).collect();
        if matches!(self.arena.items[target], Item::Object { .. }) {
            // Items given to an object of a class this reader does not run: its state.
            let dict = self.arena.push(Item::Dict(entries));
            if let Item::Object { state, .. } = &mut self.arena.items[target] {
                *state = Some(dict);
            }
            return Ok(());
        }
        match &mut self.arena.items[target] {
            Item::Dict(existing) => {
                existing.extend(entries);
                Ok(())
            }
            other => Err(format!("dict items set on {other:?}")),
        }
    }

    fn append(&mut self, target: usize, items: &[usize]) -> Result<(), PickleError> {
        match &mut self.arena.items[target] {
            Item::List(list) => {
                list.extend_from_slice(items);
                Ok(())
            }
            Item::Object { .. } => Ok(()),
            other => Err(format!("list items appended to {other:?}")),
        }
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let opcode = self.take(1)?[0];
            match opcode {
                0x80 => {
                    self.take(1)?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => {
                    let top = self.pop()?;
                    return self.arena.value(top, 0);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                b'N' => {
                    let index = self.arena.leaf(Value::None);
                    self.stack.push(index);
                }
                0x88 | 0x89 => {
                    let index = self.arena.leaf(Value::Bool(opcode == 0x88));
                    self.stack.push(index);
                }
                b'J' => {
                    let value = self.uint(4)? as u32 as i32;
                    let index = self.int(i64::from(value));
                    self.stack.push(index);
                }
                b'K' | b'M' => {
                    let value = self.uint(if opcode == b'K' { 1 } else { 2 })?;
                    let index = self.int(value as i64);
                    self.stack.push(index);
                }
                0x8a | 0x8b => {
                    let length = if opcode == 0x8a { self.uint(1)? } else { self.uint(4)? } as usize;
                    let index = self.long(length)?;
                    self.stack.push(index);
                }
                b'I' | b'L' => {
                    let text = self.line()?;
                    let text = text.trim_end_matches('L');
                    let index = match text {
                        "00" => self.arena.leaf(Value::Bool(false)),
                        "01" => self.arena.leaf(Value::Bool(true)),
                        _ => {
                            let value = text.parse::<i64>().map_err(|_| format!("an integer '{text}'"))?;
                            self.int(value)
                        }
                    };
                    self.stack.push(index);
                }
                b'G' => {
                    let bits = self.take(8)?;
                    let value = f64::from_be_bytes(bits.try_into().map_err(|_| "a float of 8 bytes")?);
                    let index = self.arena.leaf(Value::Float(value));
                    self.stack.push(index);
                }
                b'F' => {
                    let text = self.line()?;
                    let value = text.trim().parse::<f64>().map_err(|_| format!("a float '{text}'"))?;
                    let index = self.arena.leaf(Value::Float(value));
                    self.stack.push(index);
                }
                b'X' | 0x8c | 0x8d => {
                    let length = match opcode {
                        b'X' => self.uint(4)?,
                        0x8c => self.uint(1)?,
                        _ => self.uint(8)?,
                    } as usize;
                    let index = self.string(length)?;
                    self.stack.push(index);
                }
                b'T' | b'U' => {
                    // Python 2 strings: bytes, read as Latin-1 text.
                    let length = if opcode == b'T' { self.uint(4)? } else { self.uint(1)? } as usize;
                    let text: String = self.take(length)?.iter().map(|&b| b as char).collect();
                    let index = self.arena.leaf(Value::Str(text));
                    self.stack.push(index);
                }
                b'V' | b'S' => {
                    let text = self.line()?;
                    let text = if opcode == b'S' {
                        text.trim_matches(|c| c == '\'' || c == '"').to_string()
                    } else {
                        text
                    };
                    let index = self.arena.leaf(Value::Str(text));
                    self.stack.push(index);
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let length = match opcode {
                        b'B' => self.uint(4)?,
                        b'C' => self.uint(1)?,
                        _ => self.uint(8)?,
                    } as usize;
                    let bytes = self.take(length)?.to_vec();
                    let index = self.arena.leaf(Value::Bytes(bytes));
                    self.stack.push(index);
                }
                b')' => {
                    let index = self.arena.push(Item::Tuple(Vec::new()));
                    self.stack.push(index);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let index = self.arena.push(Item::Tuple(items));
                    self.stack.push(index);
                }
                0x85..=0x87 => {
                    let count = usize::from(opcode - 0x84);
                    if self.stack.len() < count {
                        return Err("a tuple of more items than the stack holds".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - count);
                    let index = self.arena.push(Item::Tuple(items));
                    self.stack.push(index);
                }
                b']' => {
                    let index = self.arena.push(Item::List(Vec::new()));
                    self.stack.push(index);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let index = self.arena.push(Item::List(items));
                    self.stack.push(index);
                }
                b'a' => {
                    let item = self.pop()?;
                    let target = self.top()?;
                    self.append(target, &[item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.append(target, &items)?;
                }
                b'}' => {
                    let index = self.arena.push(Item::Dict(Vec::new()));
                    self.stack.push(index);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let index = self.arena.push(Item::Dict(Vec::new()));
                    self.set_items(index, &items)?;
                    self.stack.push(index);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, &[key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.set_items(target, &items)?;
                }
                0x8f => {
                    let index = self.arena.push(Item::List(Vec::new()));
                    self.stack.push(index);
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.append(target, &items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let index = self.arena.push(Item::List(items));
                    self.stack.push(index);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let index = self.global(module, name);
                    self.stack.push(index);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Item::Leaf(Value::Str(module)), Item::Leaf(Value::Str(name))) =
                        (self.arena.items[module].clone(), self.arena.items[name].clone())
                    else {
                        return Err("STACK_GLOBAL of values that are not strings".into());
                    };
                    let index = self.global(module, name);
                    self.stack.push(index);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.call(class, args)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.call(class, args)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    // A dict or list given a state (an OrderedDict's attributes) keeps its items.
                    if let Item::Object { state: slot, .. } = &mut self.arena.items[target] {
                        *slot = Some(state);
                    }
                }
                b'p' => {
                    let key =
                        self.line()?.trim().parse::<u64>().map_err(|_| "a memo key that is not a number")?;
                    self.memoize(key)?;
                }
                b'q' | b'r' => {
                    let key = if opcode == b'q' { self.uint(1)? } else { self.uint(4)? };
                    self.memoize(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memoize(key)?;
                }
                b'g' => {
                    let key =
                        self.line()?.trim().parse::<u64>().map_err(|_| "a memo key that is not a number")?;
                    self.recall(key)?;
                }
                b'h' | b'j' => {
                    let key = if opcode == b'h' { self.uint(1)? } else { self.uint(4)? };
                    self.recall(key)?;
                }
                b'Q' => {
                    let id = self.pop()?;
                    let index = self.arena.push(Item::Persistent(id));
                    self.stack.push(index);
                }
                b'P' => {
                    let text = self.line()?;
                    let id = self.arena.leaf(Value::Str(text));
                    let index = self.arena.push(Item::Persistent(id));
                    self.stack.push(index);
                }
                other => {
                    return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", self.at - 1))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memoised_dict_filled_later_is_seen_filled() {
        // {'a': [1, 2], 'b': <memo 1>} with the list memoised and recalled.
        let pickle = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eX\x01\x00\x00\x00bh\x02u.";
        let value = unpickle(pickle).unwrap();
        let list = Value::List(vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(value.get("a"), Some(&list));
        assert_eq!(value.get("b"), Some(&list));
    }

    #[test]
    fn truncated_and_unknown_input_is_an_error_not_a_panic() {
        let pickle = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01u.";
        for cut in 0..pickle.len() {
            assert!(unpickle(&pickle[..cut]).is_err(), "cut at {cut}");
        }
        assert!(unpickle(b"\x80\x02\xff.").unwrap_err().contains("0xff"));
        assert!(unpickle(b"h\x05.").unwrap_err().contains("memo 5"));
    }

    #[test]
    fn negative_and_long_integers() {
        assert_eq!(unpickle(b"J\xff\xff\xff\xff.").unwrap(), Value::Int(-1));
        assert_eq!(unpickle(b"\x8a\x02\x00\x80.").unwrap(), Value::Int(-32768));
        assert_eq!(unpickle(b"\x8a\x05\x00\x00\x00\x00\x01.").unwrap(), Value::Int(1 << 32));
    }
}
