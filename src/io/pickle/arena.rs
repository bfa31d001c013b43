//! The objects an unpickling makes, shared through the memo as pickle shares them, and the
//! few reconstructors (tensors, parameters, `OrderedDict`) turned into values.

use super::{PickleError, TensorRef, Value};

/// Objects the machine has made; the stack and the memo hold indices into it.
#[derive(Default)]
pub(super) struct Arena {
    pub(super) items: Vec<Item>,
}

/// An arena entry: a leaf value, or a container of other entries.
#[derive(Debug, Clone)]
pub(super) enum Item {
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
    pub(super) fn push(&mut self, item: Item) -> usize {
        self.items.push(item);
        self.items.len() - 1
    }

    pub(super) fn leaf(&mut self, value: Value) -> usize {
        self.push(Item::Leaf(value))
    }

    pub(super) fn value(&self, index: usize, depth: usize) -> Result<Value, PickleError> {
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
