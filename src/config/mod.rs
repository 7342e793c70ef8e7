//! One TOML configuration for every stage, with the paper's defaults
//! ([`Config::paper`], the repository's `diffad.toml`) and a `tiny` preset
//! that trains on a CPU in minutes ([`Config::tiny`]).
//!
//! * [`sections`]: one struct per TOML section, each validating itself;
//! * [`variants`]: the paper's Table 1 variants;
//! * `presets`: `paper` and `tiny` ([`Config::preset`]);
//! * `stages`: the builders of the stage crates' configurations.
//!
//! ```
//! let paper = diffad::Config::paper();
//! assert_eq!(paper.data.image_size, 256);
//! let text = paper.to_toml_string().unwrap();
//! let back = diffad::Config::from_toml_str(&text, "inline").unwrap();
//! assert_eq!(back, paper);
//! ```

mod presets;
pub mod sections;
mod stages;
pub mod variants;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use sections::Check;
pub use sections::{
    AnomalyTexture, DataConfig, InferenceConfig, LdmConfig, Precision, SegmenterConfig,
    SynthesisConfig, VaeConfig,
};
pub use variants::{Reconstruction, SegmenterInput, Table1Row};

/// The whole DiffAD configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed of every random draw (synthesis, noise, initialisation, shuffling).
    pub seed: u64,
    /// Image data.
    pub data: DataConfig,
    /// Anomaly synthesis.
    pub synthesis: SynthesisConfig,
    /// Autoencoder.
    pub vae: VaeConfig,
    /// Latent diffusion model.
    pub ldm: LdmConfig,
    /// Segmentation network.
    pub segmenter: SegmenterConfig,
    /// Test time.
    pub inference: InferenceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self::paper()
    }
}

impl Config {
    /// Parses TOML text and validates it; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let origin = origin.as_ref();
        let config: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: origin.to_path_buf(),
            message: e.message().to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// A preset name (`paper`, `tiny`, `cpu`) or a TOML file path.
    pub fn load(preset_or_path: &str) -> Result<Self> {
        match Self::preset(preset_or_path) {
            Some(c) => Ok(c),
            None => Self::from_file(Path::new(preset_or_path)),
        }
    }

    /// Serialises to TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config {
            path: PathBuf::from("<serialise>"),
            message: e.to_string(),
        })
    }

    /// VAE downsampling factor `f = 2^(len(channel_mult) - 1)`.
    pub fn vae_downsample_factor(&self) -> usize {
        self.vae.downsample_factor()
    }

    /// Side of the latent `image_size / f`.
    pub fn latent_size(&self) -> usize {
        self.data.image_size / self.vae_downsample_factor()
    }

    /// Checks every value, section by section, then the stage crates' own
    /// checks of the configurations built from it; `origin` names the file
    /// in the error.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let check = Check::new(origin);
        let size = self.data.image_size;
        self.data.validate(&check)?;
        self.synthesis.validate(&check, size)?;
        self.vae.validate(&check, size)?;
        self.ldm.validate(&check, self.latent_size())?;
        self.segmenter.validate(&check, self.ldm.timesteps)?;
        self.inference.validate(&check, self.ldm.timesteps, size)?;
        self.validate_stages(&check)
    }
    /// Dotted name of the first setting that differs from `other`, if any
    /// (`None` when the two configurations are equal).
    pub fn first_difference(&self, other: &Self) -> Option<String> {
        let a = toml::Value::try_from(self).ok()?;
        let b = toml::Value::try_from(other).ok()?;
        first_difference(&a, &b, String::new())
    }
}

fn first_difference(a: &toml::Value, b: &toml::Value, prefix: String) -> Option<String> {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (ta.get(k), tb.get(k)) {
                    (Some(x), Some(y)) => first_difference(x, y, name),
                    _ => Some(name),
                }
            })
        }
        _ if a == b => None,
        _ => Some(if prefix.is_empty() {
            "<root>".into()
        } else {
            prefix
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip_through_toml() {
        for c in [Config::paper(), Config::tiny(), Config::cpu()] {
            c.validate(Path::new("preset")).unwrap();
            let text = c.to_toml_string().unwrap();
            assert_eq!(Config::from_toml_str(&text, "x").unwrap(), c);
        }
        assert_eq!(Config::paper().latent_size(), 32);
        assert_eq!(Config::paper().vae_downsample_factor(), 8);
        assert_eq!(Config::tiny().latent_size(), 16);
        // The cpu preset is the tiny one trained longer, with a wider segmenter.
        let (cpu, tiny) = (Config::cpu(), Config::tiny());
        assert_eq!(Config::preset("cpu"), Some(cpu.clone()));
        assert_eq!(cpu.vae_architecture(), tiny.vae_architecture());
        assert_eq!(cpu.unet_architecture(), tiny.unet_architecture());
        assert_eq!(
            cpu.segmenter.base_channels,
            2 * tiny.segmenter.base_channels
        );
        assert!(cpu.ldm.epochs >= 10 * tiny.ldm.epochs);
        // The map smoothing is an extension: off in the paper, on in `cpu`.
        assert_eq!(
            (Config::paper().inference.map_sigma, cpu.inference.map_sigma),
            (0.0, 1.0)
        );
        // A configuration written before the setting existed reads as 0.
        let old = Config::paper()
            .to_toml_string()
            .unwrap()
            .replace("map_sigma = 0.0\n", "");
        assert!(!old.contains("map_sigma"));
        assert_eq!(Config::from_toml_str(&old, "x").unwrap(), Config::paper());
    }

    #[test]
    fn repository_diffad_toml_is_the_paper_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("diffad.toml");
        assert_eq!(Config::from_file(&path).unwrap(), Config::paper());
    }

    #[test]
    fn table1_variants_parse_by_kebab_name() {
        let mut text = Config::paper().to_toml_string().unwrap();
        text = text.replace("\"noisy-condition\"", "\"forward-reverse\"");
        text = text.replace("\"interpolated\"", "\"vae-reconstruction\"");
        let c = Config::from_toml_str(&text, "x").unwrap();
        assert_eq!(c.ldm.reconstruction, Reconstruction::ForwardReverse);
        assert_eq!(c.segmenter.input, SegmenterInput::VaeReconstruction);
    }

    #[test]
    fn invalid_values_and_unknown_keys_name_the_file_and_field() {
        let mut c = Config::tiny();
        c.synthesis.beta_max = 1.5;
        let err = c.validate(Path::new("my.toml")).unwrap_err().to_string();
        assert!(
            err.contains("my.toml") && err.contains("synthesis.beta_max"),
            "{err}"
        );

        let mut c = Config::tiny();
        c.data.image_size = 48;
        assert!(c.validate(Path::new("x")).is_err());
        let mut c = Config::tiny();
        c.ldm.attention_levels.push(true);
        assert!(c.validate(Path::new("x")).is_err());
        for sigma in [-1.0, f64::NAN, f64::INFINITY] {
            let mut c = Config::cpu();
            c.inference.map_sigma = sigma;
            let err = c.validate(Path::new("x")).unwrap_err().to_string();
            assert!(err.contains("inference.map_sigma"), "{err}");
        }

        let text = Config::tiny().to_toml_string().unwrap() + "\n[extra]\nkey = 1\n";
        let err = Config::from_toml_str(&text, "cfg.toml").unwrap_err();
        assert!(err.to_string().contains("cfg.toml"), "{err}");
        assert!(Config::from_toml_str("seed = \"x\"", "bad.toml").is_err());
        assert!(matches!(
            Config::load("/nonexistent/diffad.toml"),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn anomaly_texture_parses_defaults_and_excludes_a_folder() {
        // Written only when not the default, so older run folders still match.
        let paper = Config::paper().to_toml_string().unwrap();
        assert!(!paper.contains("texture"));
        assert_eq!(
            Config::paper().synthesis.texture,
            AnomalyTexture::Procedural
        );

        let text = paper.replace(
            "[synthesis]\n",
            "[synthesis]\ntexture = \"self-augmentation\"\n",
        );
        let c = Config::from_toml_str(&text, "x").unwrap();
        assert_eq!(c.synthesis.texture, AnomalyTexture::SelfAugmentation);
        assert_eq!(
            Config::from_toml_str(&c.to_toml_string().unwrap(), "x").unwrap(),
            c
        );
        assert!(Config::from_toml_str(
            &paper.replace("[synthesis]\n", "[synthesis]\ntexture = \"dtd\"\n"),
            "x"
        )
        .is_err());

        let mut c = Config::tiny();
        c.synthesis.texture = AnomalyTexture::SelfAugmentation;
        c.synthesis.texture_dir = Some("dtd/images".into());
        let err = c.validate(Path::new("my.toml")).unwrap_err().to_string();
        assert!(
            err.contains("my.toml") && err.contains("synthesis.texture"),
            "{err}"
        );
    }

    #[test]
    fn first_difference_names_the_setting() {
        let a = Config::tiny();
        let mut b = a.clone();
        assert_eq!(a.first_difference(&b), None);
        b.ldm.epochs += 1;
        assert_eq!(a.first_difference(&b).as_deref(), Some("ldm.epochs"));
        b = a.clone();
        b.vae.pretrained = Some("vae.safetensors".into());
        assert_eq!(a.first_difference(&b).as_deref(), Some("vae.pretrained"));
    }
}
