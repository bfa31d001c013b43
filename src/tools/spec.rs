//! Tool specs: `NAME:key=value,...` parsed into a [`Tool`] and printed back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{Disc, Tool, ToolKind};
use crate::error::{Error, Result};

/// The `key=value` pairs of one spec, checked against the tool's keys.
struct Params<'a> {
    tool: String,
    values: BTreeMap<&'a str, &'a str>,
}

impl<'a> Params<'a> {
    fn parse(kind: ToolKind, body: &'a str) -> Result<Self> {
        let (tool, valid) = (kind.name(), kind.keys());
        let mut values = BTreeMap::new();
        for pair in body.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Error::InvalidTool(format!(
                    "{tool}: expected key=value, got '{pair}' (keys: {})",
                    valid.join(", ")
                )));
            };
            let key = key.trim();
            if !valid.contains(&key) {
                return Err(Error::InvalidTool(format!(
                    "{tool}: unknown key '{key}'; valid keys: {}",
                    valid.join(", ")
                )));
            }
            if values.insert(key, value.trim()).is_some() {
                return Err(Error::InvalidTool(format!("{tool}: key '{key}' given twice")));
            }
        }
        Ok(Self { tool, values })
    }

    fn error(&self, key: &str, expected: &str) -> Error {
        Error::InvalidTool(format!("{}: {key} must be {expected}, got '{}'", self.tool, self.values[key]))
    }

    /// A finite number, `None` when absent.
    fn optional(&self, key: &str) -> Result<Option<f64>> {
        match self.values.get(key) {
            None => Ok(None),
            Some(text) => match text.parse::<f64>() {
                Ok(value) if value.is_finite() => Ok(Some(value)),
                _ => Err(self.error(key, "a finite number")),
            },
        }
    }

    fn number(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.optional(key)?.unwrap_or(default))
    }

    /// A number in [0, 1].
    fn fraction(&self, key: &str, default: f64) -> Result<f64> {
        let value = self.number(key, default)?;
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(self.error(key, "in [0, 1]"))
        }
    }

    fn integer<T: FromStr>(&self, key: &str, default: T, expected: &str) -> Result<T> {
        match self.values.get(key) {
            None => Ok(default),
            Some(text) => text.parse::<T>().map_err(|_| self.error(key, expected)),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool> {
        match self.values.get(key).copied() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(self.error(key, "true or false")),
        }
    }

    fn disc(&self) -> Result<Disc> {
        let radius = self.optional("radius")?;
        if let Some(radius) = radius {
            if radius <= 0.0 {
                return Err(self.error("radius", "positive"));
            }
        }
        Ok(Disc { x: self.optional("x")?, y: self.optional("y")?, radius })
    }

    fn seed(&self) -> Result<u64> {
        self.integer("seed", 0, "a non-negative integer")
    }
}

impl FromStr for Tool {
    type Err = Error;

    /// `NAME` or `NAME:key=value,key=value`, e.g. `vortex:x=32,y=32,radius=8,m=2`.
    fn from_str(text: &str) -> Result<Self> {
        let (name, body) = text.split_once(':').unwrap_or((text, ""));
        let kind: ToolKind = crate::names::parse(name, "tool")
            .map_err(|error| Error::InvalidTool(format!("{error} (written NAME:key=value,...)")))?;
        let params = Params::parse(kind, body)?;
        Ok(match kind {
            ToolKind::Vortex => Tool::Vortex {
                disc: params.disc()?,
                m: params.integer("m", 1, "an integer (the winding number)")?,
                strength: params.fraction("strength", 1.0)?,
            },
            ToolKind::Wave => Tool::Wave {
                kx: params.number("kx", 0.25)?,
                ky: params.number("ky", 0.0)?,
                amplitude: params.fraction("amplitude", 1.0)?,
            },
            ToolKind::Collapse => Tool::Collapse {
                disc: params.disc()?,
                intensity: params.fraction("intensity", 1.0)?,
                seed: params.seed()?,
            },
            ToolKind::ClickOut => Tool::ClickOut {
                enabled: params.boolean("enabled", true)?,
                chance: params.fraction("chance", 0.1)?,
                seed: params.seed()?,
            },
            ToolKind::PhaseFlip => {
                Tool::PhaseFlip { rate: params.fraction("rate", 0.05)?, seed: params.seed()? }
            }
            ToolKind::BitFlip => Tool::BitFlip { rate: params.fraction("rate", 0.05)?, seed: params.seed()? },
        })
    }
}

impl fmt::Display for Tool {
    /// The spec, with every key that is set (parses back to the same tool).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disc = |disc: &Disc| {
            [("x", disc.x), ("y", disc.y), ("radius", disc.radius)]
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| format!("{key}={value},")))
                .collect::<String>()
        };
        write!(f, "{}:", self.name())?;
        match self {
            Tool::Vortex { disc: d, m, strength } => write!(f, "{}m={m},strength={strength}", disc(d)),
            Tool::Wave { kx, ky, amplitude } => write!(f, "kx={kx},ky={ky},amplitude={amplitude}"),
            Tool::Collapse { disc: d, intensity, seed } => {
                write!(f, "{}intensity={intensity},seed={seed}", disc(d))
            }
            Tool::ClickOut { enabled, chance, seed } => {
                write!(f, "enabled={enabled},chance={chance},seed={seed}")
            }
            Tool::PhaseFlip { rate, seed } | Tool::BitFlip { rate, seed } => {
                write!(f, "rate={rate},seed={seed}")
            }
        }
    }
}
