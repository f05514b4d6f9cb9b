//! The study report as a user meets it: a tiny study through `latflow run`, its page read
//! back as text — the summary on top (cheapest sampler with the cost ratios, payback,
//! agreement, and the chains' reliability on its own line), one ξ everywhere, the analysis
//! settings, the diagnostics table and the HMC scan with its chosen row — every file of the
//! folder linked and every link resolving, the schema naming every column; then
//! `latflow analyse` with another cut and fit range, kept when the study runs again.

mod common;

use std::path::{Path, PathBuf};

use common::{TINY_STUDY, assert_success, attribute_values, csv_fields, latflow, scratch};

/// The inside of the element with `id="…"` up to the closing tag `end`.
fn element<'a>(html: &'a str, id: &str, end: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id}"));
    let rest = &html[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    &rest[..rest
        .find(end)
        .unwrap_or_else(|| panic!("{id} not closed by {end}"))]
}

/// `html` without its tags.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in html.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
}

/// The rows of the table `id`, each as the text of its cells.
fn table(html: &str, id: &str) -> Vec<Vec<String>> {
    element(html, id, "</table>")
        .split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| text(&format!("<td{cell}")).trim().to_string())
                .collect()
        })
        .filter(|cells: &Vec<String>| !cells.is_empty())
        .collect()
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(
                files(&path)
                    .into_iter()
                    .map(|p| PathBuf::from(path.file_name().unwrap()).join(p)),
            );
        } else {
            out.push(PathBuf::from(path.file_name().unwrap()));
        }
    }
    out
}

fn run(dir: &Path) -> std::process::Output {
    let runcard = dir.join("tiny.toml");
    std::fs::write(&runcard, TINY_STUDY).unwrap();
    latflow()
        .arg("run")
        .arg(&runcard)
        .arg("--out")
        .arg(dir.join("out"))
        .args([
            "--quiet",
            "--set",
            "sampler.2.tune=true",
            "--set",
            "reference.phi2=[0.55, 0.01]",
        ])
        .output()
        .unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The header of a CSV file.
fn csv_header(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    csv_fields(text.lines().next().unwrap())
}

#[test]
fn the_report_opens_with_its_conclusion_and_explains_every_number_and_file() {
    let dir = scratch("report");
    let output = run(&dir);
    assert_success(&output);
    let folder = dir.join("out").join("tiny");
    let summary = read_json(&folder.join("summary.json"));
    let samplers = summary["samplers"].as_array().unwrap();
    let html = std::fs::read_to_string(folder.join("index.html")).unwrap();

    // The summary: the cheapest trustworthy sampler, named first, with every other's ratio.
    let trusted: Vec<&serde_json::Value> = samplers
        .iter()
        .filter(|s| s["report"]["verdict"] != "unreliable")
        .collect();
    let cheapest = trusted
        .iter()
        .min_by(|a, b| {
            let cost = |s: &serde_json::Value| s["cost_per_independent"].as_f64().unwrap();
            cost(a).total_cmp(&cost(b))
        })
        .unwrap();
    let name = cheapest["name"].as_str().unwrap();
    let verdict = text(element(&html, "verdict", "</span>"));
    assert!(
        verdict.contains(&format!(
            "Cheapest per independent configuration: {name} at"
        )),
        "{verdict}"
    );
    let cost = |s: &serde_json::Value| s["cost_per_independent"].as_f64().unwrap();
    for s in trusted.iter().filter(|s| s["name"] != name) {
        let ratio = cost(s) / cost(cheapest);
        assert!(
            verdict.contains(&format!(
                "{} {}",
                s["name"].as_str().unwrap(),
                ratio_text(ratio)
            )),
            "{verdict} lacks the ratio {ratio} of {}",
            s["name"]
        );
    }
    assert!(verdict.contains("training"), "{verdict}");
    let agreement = text(element(&html, "agreement", "</span>"));
    assert!(agreement.contains("pairwise pulls"), "{agreement}");
    let reliability = text(element(&html, "reliability", "</p>"));
    assert!(
        reliability.starts_with("Reliability of the chains"),
        "{reliability}"
    );
    // The summary is the page's first section, and the end of stdout.
    assert!(html.find("id=\"summary\"").unwrap() < html.find("<h2>").unwrap());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let n = lines.len();
    assert!(lines[n - 3].starts_with("summary: Cheapest"), "{stdout}");
    assert!(lines[n - 2].starts_with("reliability: Chains:"), "{stdout}");

    // One ξ: the correlated fit's, the same in the samplers table, the observables table,
    // samplers.csv and observables.csv.
    let xi_rows = table(&html, "samplers");
    let observables = table(&html, "observables");
    let xi_row = observables
        .iter()
        .find(|r| r[0].contains("xi_fit"))
        .expect("a ξ row");
    for (i, s) in samplers.iter().enumerate() {
        let fit = &s["fit"]["fit"];
        let xi = fit["xi"].as_f64().unwrap();
        assert_eq!(
            s["report"]["observables"]["xi_fit"]["mean"].as_f64(),
            Some(xi)
        );
        assert_eq!(xi_rows[i][7], xi_row[i + 1], "sampler {i}");
    }
    assert_eq!(
        html.matches("xi_fit").count(),
        2,
        "ξ defined once, in the glossary and its row"
    );

    // The analysis settings, stated.
    let settings = text(element(&html, "settings", "</p>"));
    for part in [
        "thermalisation cut 0",
        "t = 1…2",
        "histogram bins 60",
        "⟨|m|⟩",
    ] {
        assert!(settings.contains(part), "{settings} lacks {part}");
    }

    // The diagnostics table: a row per sampler with its own numbers.
    let diagnostics = table(&html, "diagnostics");
    assert_eq!(diagnostics.len(), 4);
    let row = |name: &str| diagnostics.iter().find(|r| r[0] == name).unwrap();
    assert!(row("flow+local")[1].contains("flow") && row("flow+local")[1].contains("local"));
    assert!(row("hmc")[2].contains('±'), "⟨e^−ΔH⟩: {:?}", row("hmc"));
    for flow in ["flow", "flow+local"] {
        assert!(row(flow)[3].contains('±'), "τ_rej: {:?}", row(flow));
        assert!(row(flow)[4].parse::<f64>().is_ok(), "ESS: {:?}", row(flow));
        assert!(row(flow)[6].parse::<usize>().is_ok(), "{:?}", row(flow));
    }
    assert!(row("local")[8].contains("δ") && row("hmc")[8].contains("ε"));
    // The HMC scan: a table with units and its chosen row marked.
    assert!(html.contains("force evaluations per independent config"));
    assert_eq!(html.matches("◀ chosen").count(), 1);

    // Observables in physics order, a pulls table against the reference.
    let order: Vec<String> = observables
        .iter()
        .map(|r| {
            r[0].split('(')
                .next_back()
                .unwrap()
                .trim_end_matches(')')
                .to_string()
        })
        .collect();
    assert_eq!(
        order,
        latflow::study::OBSERVABLE_ORDER.map(String::from).to_vec()
    );
    let pulls = table(&html, "pulls");
    assert!(pulls[0][1].ends_with('σ'), "{:?}", pulls[0]);

    // Every file of the folder is linked, and every link resolves.
    let links: Vec<&str> = attribute_values(&html, "href")
        .into_iter()
        .chain(attribute_values(&html, "src"))
        .collect();
    for link in &links {
        assert!(
            folder.join(link).is_file(),
            "index.html links to missing {link}"
        );
    }
    for file in files(&folder) {
        let file = file.to_string_lossy().to_string();
        if file == "index.html" {
            continue;
        }
        assert!(links.contains(&file.as_str()), "{file} is not linked");
    }
    assert!(!folder.join("checkpoint.json").exists());

    // The schema names every column of the tables and of each sampler's series.
    let schema = read_json(&folder.join("schema.json"));
    for csv in [
        "samplers.csv",
        "observables.csv",
        "diagnostics.csv",
        "hmc_tuning.csv",
    ] {
        let names: Vec<String> = schema["files"][csv]["columns"]
            .as_array()
            .unwrap_or_else(|| panic!("{csv} not in the schema"))
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, csv_header(&folder.join(csv)), "{csv}");
    }
    for s in ["flow", "flow-local", "hmc", "local"] {
        let d = folder.join("data").join(s);
        let names = read_json(&d.join("series_columns.json"));
        let schema = read_json(&d.join("schema.json"));
        let described: Vec<&serde_json::Value> = schema["files"]["series.npy"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(
            described,
            names.as_array().unwrap().iter().collect::<Vec<_>>()
        );
        assert!(schema["files"]["moves.npy"]["detail_by_kind"].is_array());
    }

    // Re-analysis: the new settings are on the page, ξ follows the fit range everywhere,
    // and a new run of the study keeps them.
    let output = latflow()
        .args([
            "analyse",
            "--quiet",
            "--therm-cut",
            "500",
            "--fit-range",
            "0:2",
        ])
        .arg(&folder)
        .output()
        .unwrap();
    assert_success(&output);
    let html = std::fs::read_to_string(folder.join("index.html")).unwrap();
    let settings = text(element(&html, "settings", "</p>"));
    assert!(settings.contains("From analysis.toml"), "{settings}");
    assert!(settings.contains("thermalisation cut 500"), "{settings}");
    assert!(settings.contains("t = 0…2"), "{settings}");
    let summary = read_json(&folder.join("summary.json"));
    let xi_rows = table(&html, "samplers");
    let xi_row = table(&html, "observables")
        .into_iter()
        .find(|r| r[0].contains("xi_fit"))
        .unwrap();
    for (i, s) in summary["samplers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(s["fit"]["fit"]["t_min"], 0);
        assert_eq!(
            s["report"]["observables"]["xi_fit"]["mean"],
            s["fit"]["fit"]["xi"]
        );
        assert_eq!(xi_rows[i][7], xi_row[i + 1]);
    }
    let again = run(&dir);
    assert_success(&again);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("analysis settings (analysis.toml)"),
        "{stdout}"
    );
    let summary = read_json(&folder.join("summary.json"));
    assert_eq!(summary["study"]["analysis"]["therm_cut"], 500);
    assert_eq!(summary["fit_range"], serde_json::json!([0, 2]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cost ratio as the summary writes it.
fn ratio_text(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}")
    } else {
        let digits = (1 - r.log10().floor() as i32).max(0) as usize;
        format!("{r:.digits$}")
    }
}
