//! Reading back the training log `training.csv` (the columns the report plots), so that a
//! report can be written again from the folder alone.

use std::path::Path;

use crate::error::{Error, Result};

/// The columns of the training log that are plotted.
pub(super) struct TrainingLog {
    pub(super) configs: Vec<f64>,
    pub(super) loss: Vec<f64>,
    pub(super) eval_configs: Vec<f64>,
    pub(super) acceptance: Vec<f64>,
    pub(super) ess: Vec<f64>,
}

/// The training log at `path`; `None` when there is none (no flow was trained).
pub(super) fn read_training_log(path: &Path) -> Result<Option<TrainingLog>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            Error::format(
                format!("training log {}", path.display()),
                format!("no column `{name}`"),
            )
        })
    };
    let (c_configs, c_loss, c_acc, c_ess) = (
        column("configs_seen")?,
        column("loss")?,
        column("acceptance")?,
        column("ess")?,
    );
    let mut log = TrainingLog {
        configs: Vec::new(),
        loss: Vec::new(),
        eval_configs: Vec::new(),
        acceptance: Vec::new(),
        ess: Vec::new(),
    };
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let get = |k: usize| fields.get(k).and_then(|f| f.parse::<f64>().ok());
        let Some(configs) = get(c_configs) else {
            continue;
        };
        if let Some(loss) = get(c_loss) {
            log.configs.push(configs);
            log.loss.push(loss);
        }
        if let Some(acceptance) = get(c_acc) {
            log.eval_configs.push(configs);
            log.acceptance.push(acceptance);
            log.ess.push(get(c_ess).unwrap_or(f64::NAN));
        }
    }
    Ok(Some(log))
}
