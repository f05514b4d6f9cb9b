//! Fits a power law y = A (x / x_ref)^z to points read from standard input, one
//! "x y σ" triple per line, with `latflow::stats::power_law_fit` (weighted least squares,
//! errors from Δχ² = 1), and prints the fit as one JSON line.
//!
//! ```text
//! printf '2 154200 9400\n2.5 612500 26000\n3 2100000 210000\n' |
//!     cargo run --release --example power_law_fit
//! ```

use std::io::Read;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let (mut x, mut y, mut err) = (Vec::new(), Vec::new(), Vec::new());
    for (number, line) in input.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 3 {
            return Err(format!("line {}: expected \"x y σ\", got {line:?}", number + 1).into());
        }
        let value = |i: usize| -> Result<f64, Box<dyn std::error::Error>> {
            fields[i]
                .parse::<f64>()
                .map_err(|e| format!("line {}: {:?}: {e}", number + 1, fields[i]).into())
        };
        x.push(value(0)?);
        y.push(value(1)?);
        err.push(value(2)?);
    }
    let fit = latflow::stats::power_law_fit(&x, &y, &err)?;
    println!("{}", serde_json::to_string(&fit)?);
    Ok(())
}
