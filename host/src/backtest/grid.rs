//! A grid of strategy parameters to sweep: each axis is a parameter name and
//! the values it takes, from `--grid fast=5..14`, `--grid slow=40..85:5`,
//! `--grid mode=fast,slow` or a TOML file of such axes. The combinations are
//! enumerated in one fixed order (the first axis slowest, the last fastest),
//! so the same grid always gives the same table.

use std::path::Path;

use rust_decimal::Decimal;

/// Most combinations one sweep may have: a typo like `1..1000000` fails at once
/// instead of queueing a day of work.
pub const MAX_COMBINATIONS: usize = 1_000_000;

/// One parameter and the values it takes, as the plugin receives them (text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    /// The parameter's name.
    pub name: String,
    /// Its values, in the order given.
    pub values: Vec<String>,
}

impl Axis {
    /// Parse `name=a..b[:step]` (inclusive, numbers; the step is 1 unless
    /// given) or `name=v1,v2,...`.
    ///
    /// # Errors
    /// A message naming what is wrong with `spec`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let Some((name, values)) = spec.split_once('=') else {
            return Err(format!(
                "--grid {spec:?}: expected name=a..b[:step] or name=v1,v2,..."
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("--grid {spec:?}: the parameter has no name"));
        }
        let values = values.trim();
        let values = if values.contains("..") {
            range(values).map_err(|e| format!("--grid {spec:?}: {e}"))?
        } else {
            list(values.split(',')).map_err(|e| format!("--grid {spec:?}: {e}"))?
        };
        Ok(Self {
            name: name.to_owned(),
            values,
        })
    }
}

/// `a..b[:step]`, both ends included.
fn range(text: &str) -> Result<Vec<String>, String> {
    let (span, step) = match text.split_once(':') {
        Some((span, step)) => (span, Some(step)),
        None => (text, None),
    };
    let Some((from, to)) = span.split_once("..") else {
        return Err("expected a..b".into());
    };
    let number = |t: &str, what: &str| {
        t.trim()
            .parse::<Decimal>()
            .map_err(|_| format!("{what} {:?} is not a number", t.trim()))
    };
    let (from, to) = (number(from, "start")?, number(to, "end")?);
    let step = match step {
        Some(s) => number(s, "step")?,
        None => Decimal::ONE,
    };
    if step <= Decimal::ZERO {
        return Err(format!("step {step} must be positive"));
    }
    if to < from {
        return Err(format!("end {to} is below start {from}"));
    }
    let count = ((to - from) / step).floor();
    if count >= Decimal::from(MAX_COMBINATIONS) {
        return Err(format!("{count} values: more than {MAX_COMBINATIONS}"));
    }
    let mut values = Vec::new();
    let mut v = from;
    while v <= to {
        values.push(v.normalize().to_string());
        v = v.checked_add(step).ok_or("the range overflows")?;
    }
    Ok(values)
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let values: Vec<String> = items.map(|v| v.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err("an empty value".into());
    }
    Ok(values)
}

/// What a grid file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridFile {
    /// The parameters swept, in the file's order.
    pub axes: Vec<Axis>,
    /// The `[params]` every run gets.
    pub fixed: Vec<(String, String)>,
}

/// The axes of a sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grid {
    /// In the order given: the first varies slowest.
    pub axes: Vec<Axis>,
}

impl Grid {
    /// A grid of `axes`, checked: names unique, every axis with a value, at most [`MAX_COMBINATIONS`].
    ///
    /// # Errors
    /// What is wrong, naming the parameter.
    pub fn new(axes: Vec<Axis>) -> Result<Self, String> {
        for (i, a) in axes.iter().enumerate() {
            if axes[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("parameter {:?} is swept twice", a.name));
            }
            if a.values.is_empty() {
                return Err(format!("parameter {:?} has no values", a.name));
            }
        }
        let grid = Self { axes };
        match grid.checked_len() {
            Some(n) if n <= MAX_COMBINATIONS => Ok(grid),
            _ => Err(format!(
                "the grid has more than {MAX_COMBINATIONS} combinations"
            )),
        }
    }

    /// Read a grid file: one key per parameter, its values an array
    /// (`slow = [40, 45, 50]`) or a range in a string (`fast = "5..14"`,
    /// `slow = "40..85:5"`). A `[params]` table holds fixed parameters.
    /// Returns the axes and the fixed parameters.
    ///
    /// # Errors
    /// The file and the key at fault.
    pub fn read_file(path: &Path) -> Result<GridFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            format!("{}: {}", path.display(), e.to_string().trim_end())
        })?;
        let mut axes = Vec::new();
        let mut fixed = Vec::new();
        for (key, value) in table {
            let at = |e: String| format!("{}: {key}: {e}", path.display());
            match value {
                toml::Value::Table(params) if key == "params" => {
                    for (k, v) in params {
                        fixed.push((
                            k.clone(),
                            scalar(&v).ok_or_else(|| {
                                format!(
                                    "{}: params.{k}: expected a number, string or boolean",
                                    path.display()
                                )
                            })?,
                        ));
                    }
                }
                toml::Value::String(s) if s.contains("..") => axes.push(Axis {
                    name: key.clone(),
                    values: range(&s).map_err(at)?,
                }),
                toml::Value::Array(items) => {
                    let values = items
                        .iter()
                        .map(scalar)
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| at("expected numbers, strings or booleans".into()))?;
                    axes.push(Axis {
                        name: key.clone(),
                        values: list(values.iter().map(String::as_str)).map_err(at)?,
                    });
                }
                other => axes.push(Axis {
                    name: key.clone(),
                    values: vec![scalar(&other).ok_or_else(|| {
                        at("expected an array, a range \"a..b[:step]\" or one value".into())
                    })?],
                }),
            }
        }
        Ok(GridFile { axes, fixed })
    }

    fn checked_len(&self) -> Option<usize> {
        self.axes
            .iter()
            .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
    }

    /// How many combinations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.checked_len().unwrap_or(usize::MAX)
    }

    /// True when there is no axis (one combination: the fixed parameters alone).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.axes.is_empty()
    }

    /// The values of combination `index` (`0..len()`), one per axis.
    #[must_use]
    pub fn combination(&self, index: usize) -> Vec<&str> {
        let mut rest = index;
        let mut values = vec![""; self.axes.len()];
        for (slot, axis) in values.iter_mut().zip(&self.axes).rev() {
            *slot = &axis.values[rest % axis.values.len()];
            rest /= axis.values.len();
        }
        values
    }

    /// [`Grid::combination`], owned (as a run's row keeps it).
    #[must_use]
    pub fn values(&self, index: usize) -> Vec<String> {
        self.combination(index)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The parameter names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.axes.iter().map(|a| a.name.as_str())
    }
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_their_mistakes() {
        assert_eq!(
            Axis::parse("fast=5..8").unwrap().values,
            ["5", "6", "7", "8"]
        );
        assert_eq!(Axis::parse("slow=40..85:5").unwrap().values.len(), 10);
        assert_eq!(
            Axis::parse("k=0.5..1.5:0.25").unwrap().values,
            ["0.5", "0.75", "1", "1.25", "1.5"]
        );
        assert_eq!(
            Axis::parse(" period = 14, 21 ").unwrap(),
            Axis {
                name: "period".into(),
                values: vec!["14".into(), "21".into()]
            }
        );
        for (bad, says) in [
            ("fast", "expected name="),
            ("=1,2", "no name"),
            ("a=9..1", "below start"),
            ("a=1..9:0", "must be positive"),
            ("a=1..x", "not a number"),
            ("a=1,,2", "empty value"),
            ("a=0..10000000", "more than"),
        ] {
            let e = Axis::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn combinations_go_last_axis_fastest_and_are_checked() {
        let grid = Grid::new(vec![
            Axis::parse("a=1,2").unwrap(),
            Axis::parse("b=x,y,z").unwrap(),
        ])
        .unwrap();
        assert_eq!(grid.len(), 6);
        let all: Vec<Vec<&str>> = (0..grid.len()).map(|i| grid.combination(i)).collect();
        assert_eq!(
            all,
            [
                ["1", "x"],
                ["1", "y"],
                ["1", "z"],
                ["2", "x"],
                ["2", "y"],
                ["2", "z"]
            ]
        );
        assert!(
            Grid::new(vec![
                Axis::parse("a=1").unwrap(),
                Axis::parse("a=2").unwrap()
            ])
            .unwrap_err()
            .contains("twice")
        );
        let huge = (0..4)
            .map(|i| Axis::parse(&format!("p{i}=1..100")).unwrap())
            .collect();
        assert!(Grid::new(huge).unwrap_err().contains("more than"));
        assert_eq!(Grid::new(Vec::new()).unwrap().len(), 1);
    }

    #[test]
    fn a_grid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.toml");
        std::fs::write(
            &path,
            "fast = \"5..7\"\nslow = [40, 50]\n[params]\nlots = 2\n",
        )
        .unwrap();
        let GridFile { axes, fixed } = Grid::read_file(&path).unwrap();
        assert_eq!(
            axes,
            [
                Axis {
                    name: "fast".into(),
                    values: vec!["5".into(), "6".into(), "7".into()]
                },
                Axis {
                    name: "slow".into(),
                    values: vec!["40".into(), "50".into()]
                }
            ]
        );
        assert_eq!(fixed, [("lots".to_owned(), "2".to_owned())]);
        std::fs::write(&path, "fast = \"9..5\"\n").unwrap();
        let e = Grid::read_file(&path).unwrap_err();
        assert!(e.contains("grid.toml: fast: end 5 is below start 9"), "{e}");
        std::fs::write(&path, "fast = [\n").unwrap();
        assert!(Grid::read_file(&path).unwrap_err().contains("grid.toml"));
    }
}
