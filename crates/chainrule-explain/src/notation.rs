//! The notebooks' notation: z, a, w, b with a layer superscript and unit subscripts,
//! rendered as Unicode text or LaTeX.

/// A quantity of the network: `w⁽ˡ⁾ⱼₖ`, `b⁽ˡ⁾ⱼ`, `z⁽ˡ⁾ⱼ`, `a⁽ˡ⁾ⱼ`, `xₖ` or `yⱼ`
/// (layers and units counted from 1, as the notebooks write them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// `w`, `b`, `z`, `a`, `x` or `y`.
    pub name: char,
    /// The layer (1 for the first linear layer), if any.
    pub layer: Option<usize>,
    /// Unit indices, 1-based.
    pub units: Vec<usize>,
}

/// The Unicode superscript digits of `n`.
pub fn superscript(n: usize) -> String {
    n.to_string()
        .chars()
        .map(|c| {
            "⁰¹²³⁴⁵⁶⁷⁸⁹"
                .chars()
                .nth(c.to_digit(10).unwrap_or(0) as usize)
                .unwrap_or(c)
        })
        .collect()
}

fn subscript(n: usize) -> String {
    n.to_string()
        .chars()
        .map(|c| {
            "₀₁₂₃₄₅₆₇₈₉"
                .chars()
                .nth(c.to_digit(10).unwrap_or(0) as usize)
                .unwrap_or(c)
        })
        .collect()
}

impl Symbol {
    /// A symbol from its parts.
    ///
    /// ```
    /// use chainrule_explain::notation::Symbol;
    /// let w = Symbol::new('w', Some(2), &[1, 2]);
    /// assert_eq!(w.text(), "w⁽²⁾₁,₂");
    /// assert_eq!(w.latex(), "w^{(2)}_{1,2}");
    /// assert_eq!(Symbol::new('x', None, &[3]).text(), "x₃");
    /// ```
    pub fn new(name: char, layer: Option<usize>, units: &[usize]) -> Symbol {
        Symbol {
            name,
            layer,
            units: units.to_vec(),
        }
    }

    /// Unicode text.
    pub fn text(&self) -> String {
        let layer = self
            .layer
            .map_or(String::new(), |l| format!("⁽{}⁾", superscript(l)));
        let units: Vec<String> = self.units.iter().map(|&u| subscript(u)).collect();
        format!("{}{layer}{}", self.name, units.join(","))
    }

    /// LaTeX.
    pub fn latex(&self) -> String {
        let layer = self.layer.map_or(String::new(), |l| format!("^{{({l})}}"));
        let units: Vec<String> = self.units.iter().map(|u| u.to_string()).collect();
        format!("{}{layer}_{{{}}}", self.name, units.join(","))
    }
}

/// ∂num/∂den in text.
///
/// ```
/// use chainrule_explain::notation::{partial_text, Symbol};
/// assert_eq!(partial_text("C", &Symbol::new('a', Some(1), &[2]).text()), "∂C/∂a⁽¹⁾₂");
/// ```
pub fn partial_text(num: &str, den: &str) -> String {
    format!("∂{num}/∂{den}")
}

/// ∂num/∂den in LaTeX.
///
/// ```
/// assert_eq!(chainrule_explain::notation::partial_latex("C", "w"), r"\frac{\partial C}{\partial w}");
/// ```
pub fn partial_latex(num: &str, den: &str) -> String {
    format!(r"\frac{{\partial {num}}}{{\partial {den}}}")
}

thread_local! {
    /// The significant digits [`number`] writes on this thread; `None`: exact.
    static DIGITS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Sets the significant digits that [`number`] (and so every derivation's text and
/// Markdown on this thread) writes: `Some(6)` for a reader, `None` (the default) for
/// the exact shortest round-trip form. A print option, as NumPy's
/// `set_printoptions(precision=…)`: the numbers computed and the JSON are never
/// rounded, only their text.
///
/// ```
/// use chainrule_explain::notation::{number, set_digits};
/// set_digits(Some(3));
/// assert_eq!(number(0.123456), "0.123");
/// set_digits(None);
/// assert_eq!(number(0.123456), "0.123456");
/// ```
pub fn set_digits(digits: Option<usize>) {
    DIGITS.with(|d| d.set(digits));
}

/// `v` to `digits` significant digits, without trailing zeros: `0.973412`,
/// `1.5e-9`, `120`; plain decimals from 10⁻⁵ to 10¹⁵, scientific notation beyond.
///
/// ```
/// use chainrule_explain::notation::significant;
/// assert_eq!(significant(2.0 / 3.0, 6), "0.666667");
/// assert_eq!(significant(-1234.5678, 6), "-1234.57");
/// assert_eq!(significant(1.0382e-13, 6), "1.0382e-13");
/// assert_eq!(significant(0.1 + 0.2, 6), "0.3");
/// ```
pub fn significant(v: f64, digits: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = digits.max(1);
    let magnitude = v.abs().log10().floor() as i32;
    let trim = |t: String| {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    };
    if (-5..15).contains(&magnitude) {
        let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    } else {
        let text = format!("{v:.*e}", digits - 1);
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        format!("{}e{exponent}", trim(mantissa.to_string()))
    }
}

/// A number as the notebooks print it: shortest round-trip form, without a
/// trailing `.0` (or to the digits [`set_digits`] asked for).
///
/// ```
/// use chainrule_explain::notation::number;
/// assert_eq!(number(1.0), "1");
/// assert_eq!(number(0.985), "0.985");
/// assert_eq!(number(-0.5), "-0.5");
/// ```
pub fn number(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if let Some(digits) = DIGITS.with(|d| d.get()) {
        significant(v, digits)
    } else {
        format!("{v}")
    }
}

/// A number inside a product: negatives in parentheses, `2 · (-0.5)`.
///
/// ```
/// use chainrule_explain::notation::operand;
/// assert_eq!(operand(-0.5), "(-0.5)");
/// assert_eq!(operand(2.0), "2");
/// ```
pub fn operand(v: f64) -> String {
    if v < 0.0 {
        format!("({})", number(v))
    } else {
        number(v)
    }
}
