//! The names users type for architectures, views, losses and tools, derived once.
//!
//! Each of those enums derives clap's `ValueEnum` (the command line's parser, help and
//! completions) and serde's kebab-case names (config files); the helpers here give the same
//! name everywhere else, so that no name is written by hand twice. A test checks that clap's
//! and serde's names agree.

use clap::ValueEnum;

/// The name of `value` (`unet-unitary`, `click-out`, ...).
pub fn name_of<T: ValueEnum>(value: &T) -> String {
    value.to_possible_value().map(|possible| possible.get_name().to_string()).unwrap_or_default()
}

/// Every name of `T`, comma-separated, for messages.
pub fn all_names<T: ValueEnum>() -> String {
    T::value_variants().iter().map(name_of).collect::<Vec<_>>().join(", ")
}

/// Parses one of `T`'s names (ignoring case, `_` read as `-`). The error names `what` was
/// expected and lists every name.
pub fn parse<T: ValueEnum>(text: &str, what: &str) -> Result<T, String> {
    let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
    T::from_str(&wanted, false)
        .map_err(|_| format!("unknown {what} '{text}': expected one of {}", all_names::<T>()))
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;
    use serde::Serialize;

    use super::*;
    use crate::models::Architecture;
    use crate::observables::View;
    use crate::tools::ToolKind;
    use crate::training::loss::LossKind;

    /// clap's name and serde's are the same for every variant, and parse back.
    fn agree<T: ValueEnum + Serialize + PartialEq + std::fmt::Debug>(what: &str) {
        for value in T::value_variants() {
            let name = name_of(value);
            assert_eq!(serde_json::to_value(value).unwrap(), serde_json::Value::String(name.clone()));
            assert_eq!(&parse::<T>(&name.to_uppercase().replace('-', "_"), what).unwrap(), value);
        }
        let error = parse::<T>("nonsense", what).unwrap_err();
        assert!(error.contains(&format!("unknown {what} 'nonsense'")), "{error}");
        assert!(error.contains(&name_of(&T::value_variants()[0])), "{error}");
    }

    #[test]
    fn clap_and_serde_names_agree() {
        agree::<Architecture>("architecture");
        agree::<View>("view");
        agree::<LossKind>("loss");
        agree::<ToolKind>("tool");
    }
}
