//! Architecture of an [`AutoencoderKl`](crate::AutoencoderKl), with the field names of
//! diffusers' `AutoencoderKL` config.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Architecture of a KL autoencoder (diffusers `AutoencoderKL` with `DownEncoderBlock2D` /
/// `UpDecoderBlock2D` blocks and SiLU activations).
///
/// The encoder has one level per entry of `block_out_channels`, each with
/// `layers_per_block` res blocks and (except the last) a stride-2 downsampler; the decoder
/// mirrors it with `layers_per_block + 1` res blocks per level. The spatial downsampling
/// factor is `f = 2^(levels − 1)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderKlConfig {
    /// Image channels in (3).
    pub in_channels: usize,
    /// Image channels out (3).
    pub out_channels: usize,
    /// Width of each level, from the full-resolution one down.
    pub block_out_channels: Vec<usize>,
    /// Res blocks per encoder level (the decoder has one more).
    pub layers_per_block: usize,
    /// Latent channels `C` (the encoder outputs `2C` moments).
    pub latent_channels: usize,
    /// GroupNorm groups everywhere (they must divide every width).
    pub norm_num_groups: usize,
    /// Whether the mid blocks have a self-attention layer.
    pub mid_block_add_attention: bool,
    /// Whether a 1x1 `quant_conv` follows the encoder.
    pub use_quant_conv: bool,
    /// Whether a 1x1 `post_quant_conv` precedes the decoder.
    pub use_post_quant_conv: bool,
    /// Dropout probability inside the res blocks while training (0 at inference;
    /// diffusers' VAE has none).
    #[serde(default)]
    pub dropout: f64,
}

impl AutoencoderKlConfig {
    /// The paper's VAE (released `configs/kl.yaml`, `docs/reference.md` §2): widths 128/256/512/512,
    /// 2 res blocks per level, 4 latent channels, 32 groups, mid-block attention,
    /// `f = 8` (256x256x3 → 32x32x4), ~83.7 M parameters. Dropout 0 (set
    /// [`dropout`](Self::dropout) to train with it).
    pub fn diffad() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            dropout: 0.0,
        }
    }

    /// A small config for tests and examples: widths 32/64, 1 res block per level, 4 latent
    /// channels, 8 groups, `f = 2`.
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![32, 64],
            layers_per_block: 1,
            norm_num_groups: 8,
            ..Self::diffad()
        }
    }

    /// Reads the numbers of a diffusers `config.json` (as saved by
    /// `AutoencoderKL.save_pretrained`). Only `DownEncoderBlock2D` / `UpDecoderBlock2D`
    /// blocks and the `silu` activation are supported.
    pub fn from_diffusers_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_diffusers_value(&json)
            .map_err(|reason| Error::Config(format!("{}: {reason}", path.display())))
    }

    /// The diffusers `AutoencoderKL` `config.json` of this architecture (what
    /// `AutoencoderKL.from_pretrained` reads; [`from_diffusers_json`](Self::from_diffusers_json)
    /// reads it back). `scaling_factor` is 1: DiffAD's diffusion model runs on the
    /// unscaled posterior mean (`docs/reference.md` §3), so a diffusers pipeline must not
    /// rescale the latents either. `sample_size` (the image side, only a default for
    /// pipelines) is left to the caller to add.
    pub fn to_diffusers_json(&self) -> String {
        let levels = self.block_out_channels.len();
        let v = serde_json::json!({
            "_class_name": "AutoencoderKL",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": vec!["DownEncoderBlock2D"; levels],
            "up_block_types": vec!["UpDecoderBlock2D"; levels],
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "act_fn": "silu",
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "scaling_factor": 1.0,
            "force_upcast": true,
            "use_quant_conv": self.use_quant_conv,
            "use_post_quant_conv": self.use_post_quant_conv,
            "mid_block_add_attention": self.mid_block_add_attention,
        });
        // A json! value of plain literals always serialises.
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    fn from_diffusers_value(json: &serde_json::Value) -> std::result::Result<Self, String> {
        let defaults = Self::diffad();
        let usize_of = |key: &str, default: usize| -> std::result::Result<usize, String> {
            match json.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| format!("`{key}` is not a non-negative integer")),
            }
        };
        let bool_of = |key: &str, default: bool| -> std::result::Result<bool, String> {
            match json.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| format!("`{key}` is not a boolean")),
            }
        };
        let block_out_channels = match json.get("block_out_channels") {
            None => return Err("missing `block_out_channels`".into()),
            Some(v) => v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| x.as_u64().map(|x| x as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or("`block_out_channels` is not a list of integers")?,
        };
        for (key, want) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            if let Some(types) = json.get(key).and_then(|v| v.as_array()) {
                if types.iter().any(|t| t.as_str() != Some(want)) {
                    return Err(format!("only {want} is supported in `{key}`"));
                }
            }
        }
        if let Some(act) = json.get("act_fn").and_then(|v| v.as_str()) {
            if act != "silu" {
                return Err(format!("activation `{act}` is not supported (only silu)"));
            }
        }
        let config = Self {
            in_channels: usize_of("in_channels", 3)?,
            out_channels: usize_of("out_channels", 3)?,
            block_out_channels,
            // diffusers' own default is 1
            layers_per_block: usize_of("layers_per_block", 1)?,
            latent_channels: usize_of("latent_channels", defaults.latent_channels)?,
            norm_num_groups: usize_of("norm_num_groups", defaults.norm_num_groups)?,
            mid_block_add_attention: bool_of("mid_block_add_attention", true)?,
            use_quant_conv: bool_of("use_quant_conv", true)?,
            use_post_quant_conv: bool_of("use_post_quant_conv", true)?,
            dropout: 0.0,
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Checks that the config can be built.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config(reason));
        if self.block_out_channels.is_empty() {
            return bad("block_out_channels is empty".into());
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return bad("channel counts must be positive".into());
        }
        if self.layers_per_block == 0 {
            return bad("layers_per_block must be positive".into());
        }
        if self.norm_num_groups == 0 {
            return bad("norm_num_groups must be positive".into());
        }
        if let Some(w) = self
            .block_out_channels
            .iter()
            .find(|&&w| w == 0 || w % self.norm_num_groups != 0)
        {
            return bad(format!(
                "width {w} is not a positive multiple of norm_num_groups = {}",
                self.norm_num_groups
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} not in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Spatial downsampling factor `f = 2^(levels − 1)`.
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

/// The `config.json` of a diffusers model folder.
pub const DIFFUSERS_CONFIG: &str = "config.json";

/// The weights files a diffusers model folder may hold, in order of preference
/// (`save_pretrained` writes the first; some single-model repositories ship the second).
pub const DIFFUSERS_WEIGHTS: [&str; 2] =
    ["diffusion_pytorch_model.safetensors", "model.safetensors"];

/// A diffusers `AutoencoderKL` folder (as written by `save_pretrained`): its
/// `config.json`, the architecture read from it, and its safetensors weights.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusersFolder {
    /// `<dir>/config.json`.
    pub config_file: PathBuf,
    /// `<dir>/diffusion_pytorch_model.safetensors`, else `<dir>/model.safetensors`.
    pub weights_file: PathBuf,
    /// The architecture of `config.json`.
    pub config: AutoencoderKlConfig,
}

impl DiffusersFolder {
    /// Finds the files of the diffusers folder `dir` and reads its architecture. A
    /// missing `config.json` or weights file is an [`Error::Io`] naming the file that
    /// was looked for; an unsupported config an [`Error::Config`] naming `config.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_file = dir.join(DIFFUSERS_CONFIG);
        if !config_file.is_file() {
            let hint = if dir.join("vae").join(DIFFUSERS_CONFIG).is_file() {
                " (this looks like a pipeline folder: use its vae/ subfolder)"
            } else {
                ""
            };
            return Err(Error::io(
                config_file,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("a diffusers AutoencoderKL folder needs its {DIFFUSERS_CONFIG}{hint}"),
                ),
            ));
        }
        let weights_file = DIFFUSERS_WEIGHTS
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::io(
                    dir.join(DIFFUSERS_WEIGHTS[0]),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "a diffusers AutoencoderKL folder needs its weights ({} or {})",
                            DIFFUSERS_WEIGHTS[0], DIFFUSERS_WEIGHTS[1]
                        ),
                    ),
                )
            })?;
        let config = AutoencoderKlConfig::from_diffusers_json(&config_file)?;
        Ok(Self {
            config_file,
            weights_file,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_config_has_factor_8_and_4_latent_channels() {
        let c = AutoencoderKlConfig::diffad();
        assert_eq!(c.downsample_factor(), 8);
        assert_eq!(c.latent_channels, 4);
        c.validate().unwrap();
        AutoencoderKlConfig::tiny().validate().unwrap();
    }

    #[test]
    fn rejects_widths_not_divisible_by_groups() {
        let c = AutoencoderKlConfig {
            block_out_channels: vec![32, 60],
            ..AutoencoderKlConfig::tiny()
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn reads_the_fixture_diffusers_config() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_vae_config.json");
        let c = AutoencoderKlConfig::from_diffusers_json(&path).unwrap();
        assert_eq!(c.block_out_channels, vec![8, 16, 16]);
        assert_eq!(c.layers_per_block, 2);
        assert_eq!(c.norm_num_groups, 4);
        assert_eq!(c.downsample_factor(), 4);
    }

    #[test]
    fn diffusers_json_round_trips() {
        for c in [
            AutoencoderKlConfig::diffad(),
            AutoencoderKlConfig {
                mid_block_add_attention: false,
                use_quant_conv: false,
                latent_channels: 16,
                ..AutoencoderKlConfig::tiny()
            },
        ] {
            let json: serde_json::Value = serde_json::from_str(&c.to_diffusers_json()).unwrap();
            assert_eq!(json["scaling_factor"], 1.0);
            assert_eq!(json["_class_name"], "AutoencoderKL");
            assert_eq!(AutoencoderKlConfig::from_diffusers_value(&json).unwrap(), c);
        }
    }

    #[test]
    fn a_folder_without_config_json_names_the_file() {
        let dir = std::env::temp_dir().join(format!("diffad-vae-no-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = DiffusersFolder::open(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(&err, Error::Io { path, .. } if path.ends_with("config.json")),
            "{err}"
        );
    }
}
