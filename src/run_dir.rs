//! The run directory: everything of one training run in one folder.
//!
//! ```text
//! <run>/config.toml                   the configuration (a run never changes it)
//! <run>/train.log                     one line per stage event
//! <run>/vae/vae.safetensors           final VAE (diffusers names)
//! <run>/vae/config.json               its diffusers architecture, when `vae.pretrained` is a
//!                                     diffusers folder (else the architecture is `[vae]`'s)
//! <run>/vae/checkpoints/step-N/       resumable VAE checkpoints while training
//! <run>/ldm/unet.safetensors          final denoiser (EMA weights, diffusers names)
//! <run>/ldm/checkpoint.safetensors    resumable LDM checkpoint while training
//! <run>/seg/segmenter.safetensors     final segmenter (DRAEM names)
//! <run>/seg/checkpoint.safetensors    resumable segmenter checkpoint while training
//! <run>/{vae,ldm,seg}/loss.csv        `step,loss` of every optimiser step, appended
//! ```
//!
//! A stage is done when its final file exists; an interrupted stage resumes
//! from its checkpoint. Every file is written atomically.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::io::{create_dir_all, write_atomic};
use crate::stage::Stage;

/// The file holding a run's configuration.
pub const CONFIG_FILE: &str = "config.toml";

/// A run directory (see the module documentation).
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
    config: Config,
}

impl RunDir {
    /// Creates `root` with `config`, or reopens it if it was made with the
    /// same configuration. A different saved configuration is
    /// [`Error::ConfigMismatch`] naming the first differing setting.
    pub fn create(root: &Path, config: Config) -> Result<Self> {
        config.validate(Path::new("<config>"))?;
        let file = root.join(CONFIG_FILE);
        if file.exists() {
            let saved = Config::from_file(&file)?;
            if let Some(field) = saved.first_difference(&config) {
                return Err(Error::ConfigMismatch {
                    run_dir: root.to_path_buf(),
                    field,
                });
            }
        } else {
            create_dir_all(root)?;
            write_atomic(&file, config.to_toml_string()?.as_bytes())?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            config,
        })
    }

    /// Opens an existing run directory with its saved configuration.
    pub fn open(root: &Path) -> Result<Self> {
        let file = root.join(CONFIG_FILE);
        if !file.is_file() {
            return Err(Error::Layout {
                path: root.to_path_buf(),
                reason: format!("not a diffad run directory (no {CONFIG_FILE})"),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            config: Config::from_file(&file)?,
        })
    }

    /// The run's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Final weights of a stage.
    pub fn weights(&self, stage: Stage) -> PathBuf {
        match stage {
            Stage::Vae => self.root.join("vae").join("vae.safetensors"),
            Stage::Ldm => self.root.join("ldm").join("unet.safetensors"),
            Stage::Segmenter => self.root.join("seg").join("segmenter.safetensors"),
        }
    }

    /// The diffusers `config.json` of the final VAE: written by the VAE stage when
    /// `vae.pretrained` is a diffusers folder, absent otherwise.
    pub fn vae_config(&self) -> PathBuf {
        self.root
            .join("vae")
            .join(diffad_vae::config::DIFFUSERS_CONFIG)
    }

    /// The architecture of the run's final VAE: that of [`RunDir::vae_config`] when it
    /// exists (a pretrained diffusers folder), else [`Config::vae_architecture`].
    pub fn vae_architecture(&self) -> Result<diffad_vae::AutoencoderKlConfig> {
        let file = self.vae_config();
        if file.is_file() {
            Ok(diffad_vae::AutoencoderKlConfig::from_diffusers_json(&file)?)
        } else {
            Ok(self.config.vae_architecture())
        }
    }

    /// The resumable checkpoint of a stage (a folder of `step-N` folders for
    /// the VAE, one file otherwise).
    pub fn checkpoint(&self, stage: Stage) -> PathBuf {
        match stage {
            Stage::Vae => self.root.join("vae").join("checkpoints"),
            Stage::Ldm => self.root.join("ldm").join("checkpoint.safetensors"),
            Stage::Segmenter => self.root.join("seg").join("checkpoint.safetensors"),
        }
    }

    /// The per-step loss log of a stage (`step,loss` lines, appended as the
    /// stage trains, across resumes).
    pub fn loss_log(&self, stage: Stage) -> PathBuf {
        self.root.join(stage.name()).join("loss.csv")
    }

    /// Whether a stage has finished (its final weights exist).
    pub fn is_done(&self, stage: Stage) -> bool {
        self.weights(stage).is_file()
    }

    /// The final weights of a stage, or [`Error::MissingCheckpoint`] naming
    /// the stage that writes them.
    pub fn require(&self, stage: Stage) -> Result<PathBuf> {
        let path = self.weights(stage);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingCheckpoint { path, stage })
        }
    }

    /// The training log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("train.log")
    }

    /// Appends a timestamped line to the training log.
    pub fn log(&self, line: &str) -> Result<()> {
        let path = self.log_path();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{secs} {line}").map_err(|e| Error::io(&path, e))
    }
}
