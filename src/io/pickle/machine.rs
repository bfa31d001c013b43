//! The pickle virtual machine: one opcode at a time over the stack, marks and memo.

use std::collections::HashMap;

use super::arena::{Arena, Item};
use super::{PickleError, Value};

/// The machine's state while it reads one pickle.
pub(super) struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    arena: Arena,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
}

impl<'a> Machine<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Machine {
            bytes,
            at: 0,
            arena: Arena::default(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

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

    pub(super) fn run(mut self) -> Result<Value, PickleError> {
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
