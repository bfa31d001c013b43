//! A small unpickler for the files PyTorch writes: `torch.save` archives (state_dicts,
//! training checkpoints, saved tensors) and TorchScript's `data.pkl`.
//!
//! It runs the pickle opcodes of protocols 0 to 5 that those files use and builds a [`Value`]
//! tree, calling nothing: a class or function named in the pickle (`GLOBAL`) stays a name,
//! and applying it (`REDUCE`, `NEWOBJ`, `BUILD`) records the call, except for the few
//! reconstructors this crate understands (tensors, parameters, `OrderedDict`). Objects live in
//! an arena so that the memo shares them as pickle does (a dict filled after it was memoised is
//! seen filled everywhere).

mod arena;
mod machine;

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

/// Reads pickle `bytes` into a value.
pub fn unpickle(bytes: &[u8]) -> Result<Value, PickleError> {
    machine::Machine::new(bytes).run()
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
