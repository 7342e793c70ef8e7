//! diffusers interop: `diffad export` writes folders that diffusers loads with the
//! same numbers as ours, and `vae.pretrained` takes a diffusers folder.
//!
//! The committed fixture `tests/fixtures/export/diffusers_outputs.safetensors` holds
//! diffusers' outputs (VAE posterior and decoding, UNet noise predictions, a whole
//! DDIM chain) on the export of [`seeded_run`], whose weights depend only on
//! [`SEED`] (`diffad_nn::init` draws each parameter from a stream seeded by its name).
//! To regenerate it (after a change of the initialisation or of the micro
//! configuration), see `scripts/check_diffusers_export.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use diffad::diffusion::{Ddim, DdimConfig, Denoiser, Scheduler, UNet, UNetConfig};
use diffad::export::{export_diffusers, DiffusersExport, CONFIG_JSON, WEIGHTS_FILE};
use diffad::train::silent;
use diffad::vae::{AutoencoderKl, AutoencoderKlConfig};
use diffad::{Config, Error, RunDir, Stage, TrainOptions};

/// The seed of the exported run's weights (the fixture was made from it).
const SEED: u64 = 13;

/// Largest absolute difference allowed between diffusers' outputs (PyTorch, f32)
/// and ours: both sides are f32 with different summation orders.
const TOLERANCE: f32 = 2e-4;

/// The tiny preset shrunk to 32x32 images and networks a few kB in size (VAE widths
/// 8/16, UNet widths 8/16 with attention on the second level), so the fixture is small.
fn micro_config() -> Config {
    let mut c = Config::tiny();
    c.data.image_size = 32;
    c.vae.base_channels = 8;
    c.vae.channel_mult = vec![1, 2];
    c.vae.layers_per_block = 1;
    c.vae.norm_groups = 4;
    c.vae.epochs = 1;
    c.vae.batch_size = 2;
    c.ldm.model_channels = 8;
    c.ldm.channel_mult = vec![1, 2];
    c.ldm.layers_per_block = 1;
    c.ldm.attention_levels = vec![false, true];
    c.ldm.head_channels = 8;
    c.ldm.norm_groups = 4;
    c.ldm.epochs = 1;
    c.ldm.batch_size = 2;
    c.inference.ddim_steps = 5;
    // Two training images: none held out for thresholds.
    c.data.validation_fraction = 0.0;
    c
}

/// A run directory at `root` with the VAE and denoiser of `config` initialised from
/// `seed` (no training), as if both stages had finished.
fn seeded_run(root: &Path, config: Config, seed: u64) -> RunDir {
    let device = Device::Cpu;
    let run = RunDir::create(root, config.clone()).unwrap();
    for stage in [Stage::Vae, Stage::Ldm] {
        std::fs::create_dir_all(run.weights(stage).parent().unwrap()).unwrap();
    }
    AutoencoderKl::new(config.vae_architecture(), seed, &device)
        .unwrap()
        .save(run.weights(Stage::Vae))
        .unwrap();
    let vars = VarMap::new();
    let vb = diffad::nn::init::seeded_var_builder(&vars, seed, DType::F32, &device);
    UNet::new(config.unet_architecture(), vb).unwrap();
    vars.save(run.weights(Stage::Ldm)).unwrap();
    run
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/export/diffusers_outputs.safetensors")
}

/// The committed diffusers outputs, by name.
fn fixture() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_path(), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn assert_close(what: &str, ours: &Tensor, diffusers: &Tensor) {
    let diff = max_abs_diff(ours, diffusers);
    let scale = diffusers
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("{what}: max |ours - diffusers| = {diff:.3e} (max |diffusers| = {scale:.3})");
    // Relative to the outputs' size: the DDIM chain of a random network grows to ~40.
    assert!(
        diff <= TOLERANCE * scale.max(1.0),
        "{what}: max abs difference {diff} > {TOLERANCE} x max(1, {scale})"
    );
}

/// The export of the seeded run, in `dir`.
fn seeded_export(dir: &Path) -> (RunDir, DiffusersExport) {
    let run = seeded_run(&dir.join("run"), micro_config(), SEED);
    let export = export_diffusers(&run, &dir.join("export")).unwrap();
    (run, export)
}

/// The DDIM sampler of an exported `scheduler/` with `steps` steps.
fn load_scheduler(export: &DiffusersExport, steps: usize) -> Ddim {
    let json = std::fs::read_to_string(export.scheduler.join("scheduler_config.json")).unwrap();
    Ddim::new(DdimConfig {
        num_inference_steps: steps,
        ..DdimConfig::from_diffusers_json(&json).unwrap()
    })
    .unwrap()
}

/// Writes the export that `scripts/check_diffusers_export.py` loads in diffusers to
/// make the fixture: to `$DIFFAD_EXPORT_DIR`, else `target/diffad-export-fixture`.
#[test]
#[ignore = "writes the export the fixture script reads; run by hand"]
fn write_export_for_the_diffusers_check() {
    let out = std::env::var_os("DIFFAD_EXPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/diffad-export-fixture")
        });
    let work = tempfile::tempdir().unwrap();
    let run = seeded_run(&work.path().join("run"), micro_config(), SEED);
    let export = export_diffusers(&run, &out).unwrap();
    println!("wrote {}", export.vae.parent().unwrap().display());
}

#[test]
fn the_export_reproduces_the_committed_diffusers_outputs() {
    let device = Device::Cpu;
    let work = tempfile::tempdir().unwrap();
    let (run, export) = seeded_export(work.path());
    let fx = fixture();
    let get = |name: &str| {
        fx.get(name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"))
    };

    // The VAE: posterior of images in [-1, 1], decoding of latents.
    let vae = AutoencoderKl::from_pretrained(&export.vae, &device).unwrap();
    assert_eq!(vae.config(), &run.vae_architecture().unwrap());
    let posterior = vae.encode_raw(get("vae.input")).unwrap();
    assert_close("vae posterior mean", &posterior.mean, get("vae.mean"));
    assert_close("vae posterior logvar", &posterior.logvar, get("vae.logvar"));
    let decoded = vae.decode_raw(get("vae.latents")).unwrap();
    assert_close("vae decoding", &decoded, get("vae.decoded"));

    // The UNet: noise predictions at two timesteps.
    let unet = UNet::from_pretrained(&export.unet, &device).unwrap();
    assert_eq!(unet.config(), &run.config().unet_architecture());
    let eps = unet
        .forward(get("unet.sample"), get("unet.timesteps"), false)
        .unwrap();
    assert_close("unet noise prediction", &eps, get("unet.output"));

    // The scheduler: diffusers' timesteps and a whole deterministic DDIM chain
    // z_T -> z_0 under the condition c, then D(z_0).
    let steps = run.config().inference.ddim_steps;
    let ddim = load_scheduler(&export, steps);
    assert_eq!(ddim.config(), run.config().ddim(steps).unwrap().config());
    let timesteps: Vec<i64> = get("ddim.timesteps").to_vec1().unwrap();
    let ours: Vec<i64> = ddim.timesteps().iter().map(|&t| t as i64).collect();
    assert_eq!(ours, timesteps);
    let condition = get("ddim.condition");
    let mut z = get("ddim.start").clone();
    for &t in ddim.timesteps() {
        let t_tensor = Tensor::new(&[t as u32], &device).unwrap();
        let eps = unet.predict(&z, &t_tensor, Some(condition)).unwrap();
        z = ddim.step(&eps, t, &z, None).unwrap().prev_sample;
    }
    assert_close("ddim chain z_0", &z, get("ddim.final"));
    let x_r = vae.decode_raw(&z).unwrap();
    assert_close("decoded reconstruction", &x_r, get("ddim.decoded"));
}

#[test]
fn the_export_copies_the_weights_and_writes_diffusers_configs() {
    let work = tempfile::tempdir().unwrap();
    let (run, export) = seeded_export(work.path());
    for (stage, dir) in [(Stage::Vae, &export.vae), (Stage::Ldm, &export.unet)] {
        let copied = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        assert_eq!(
            copied,
            std::fs::read(run.weights(stage)).unwrap(),
            "{stage}"
        );
    }
    let json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let vae = json(export.vae.join(CONFIG_JSON));
    assert_eq!(vae["_class_name"], "AutoencoderKL");
    assert_eq!(vae["block_out_channels"], serde_json::json!([8, 16]));
    assert_eq!(
        vae["down_block_types"],
        serde_json::json!(["DownEncoderBlock2D", "DownEncoderBlock2D"])
    );
    assert_eq!(vae["scaling_factor"], 1.0);
    assert_eq!(vae["sample_size"], 32);
    let unet = json(export.unet.join(CONFIG_JSON));
    assert_eq!(unet["_class_name"], "UNet2DModel");
    assert_eq!(unet["in_channels"], 8);
    assert_eq!(
        unet["down_block_types"],
        serde_json::json!(["DownBlock2D", "AttnDownBlock2D"])
    );
    assert_eq!(
        unet["up_block_types"],
        serde_json::json!(["AttnUpBlock2D", "UpBlock2D"])
    );
    assert_eq!(unet["sample_size"], 16);
    assert_eq!(
        UNetConfig::from_diffusers_json(&unet.to_string()).unwrap(),
        run.config().unet_architecture()
    );
    let scheduler = json(export.scheduler.join("scheduler_config.json"));
    assert_eq!(scheduler["_class_name"], "DDIMScheduler");
    assert_eq!(scheduler["num_train_timesteps"], 1000);
    assert_eq!(scheduler["beta_start"], 0.0015);
    assert_eq!(scheduler["beta_end"], 0.02);
    assert_eq!(scheduler["beta_schedule"], "scaled_linear");
    assert_eq!(scheduler["timestep_spacing"], "leading");
    assert_eq!(scheduler["steps_offset"], 1);
    assert_eq!(scheduler["set_alpha_to_one"], false);
    assert_eq!(scheduler["clip_sample"], false);
    assert_eq!(scheduler["prediction_type"], "epsilon");
}

/// Two good images of the micro configuration's size (the pretrained VAE stage reads
/// none of them, the LDM stage trains on them).
fn images() -> Vec<diffad::data::RgbImage> {
    (0..2)
        .map(|i| diffad::demo_data::good_image(32, 7, 0, i).unwrap())
        .collect()
}

fn train_stages(run: &RunDir, stages: &[Stage]) -> diffad::Result<()> {
    let options = TrainOptions {
        stages: stages.to_vec(),
    };
    diffad::train(run, &images(), &Device::Cpu, &options, &mut silent).map(drop)
}

#[test]
fn a_pretrained_diffusers_folder_loads_the_same_numbers() {
    let device = Device::Cpu;
    let work = tempfile::tempdir().unwrap();
    let (run, export) = seeded_export(work.path());
    let mut config = micro_config();
    config.vae.pretrained = Some(export.vae.clone());
    let second = RunDir::create(&work.path().join("second"), config).unwrap();
    train_stages(&second, &[Stage::Vae]).unwrap();

    assert!(second.vae_config().is_file());
    assert_eq!(
        second.vae_architecture().unwrap(),
        run.vae_architecture().unwrap()
    );
    let original = AutoencoderKl::load(
        run.vae_architecture().unwrap(),
        run.weights(Stage::Vae),
        &device,
    )
    .unwrap();
    let loaded = AutoencoderKl::load(
        second.vae_architecture().unwrap(),
        second.weights(Stage::Vae),
        &device,
    )
    .unwrap();
    let x = fixture()["vae.input"].clone();
    let a = original.encode_raw(&x).unwrap().mean;
    let b = loaded.encode_raw(&x).unwrap().mean;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let (a, b) = (
        original.decode_raw(&a).unwrap(),
        loaded.decode_raw(&b).unwrap(),
    );
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn a_pretrained_folder_architecture_other_than_the_config_is_used_by_later_stages() {
    let device = Device::Cpu;
    let work = tempfile::tempdir().unwrap();
    // A VAE wider and deeper than `[vae]` says, with the same latents (4 channels, f = 2).
    let arch = AutoencoderKlConfig {
        block_out_channels: vec![16, 16],
        layers_per_block: 2,
        norm_num_groups: 8,
        ..micro_config().vae_architecture()
    };
    let folder = work.path().join("pretrained");
    std::fs::create_dir_all(&folder).unwrap();
    AutoencoderKl::new(arch.clone(), 5, &device)
        .unwrap()
        .save(folder.join(WEIGHTS_FILE))
        .unwrap();
    std::fs::write(folder.join(CONFIG_JSON), arch.to_diffusers_json()).unwrap();

    let mut config = micro_config();
    config.vae.pretrained = Some(folder);
    let run = RunDir::create(&work.path().join("run"), config).unwrap();
    // The LDM stage encodes its training images with the run's VAE: it must rebuild
    // the folder's architecture, not `[vae]`'s.
    train_stages(&run, &[Stage::Vae, Stage::Ldm]).unwrap();
    assert_eq!(run.vae_architecture().unwrap(), arch);
    let export = export_diffusers(&run, &work.path().join("export")).unwrap();
    let vae = AutoencoderKl::from_pretrained(&export.vae, &device).unwrap();
    assert_eq!(vae.config(), &arch);
}

#[test]
fn a_pretrained_folder_without_config_json_is_an_error_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let (_, export) = seeded_export(work.path());
    std::fs::remove_file(export.vae.join(CONFIG_JSON)).unwrap();
    let mut config = micro_config();
    config.vae.pretrained = Some(export.vae.clone());
    let run = RunDir::create(&work.path().join("second"), config).unwrap();
    let err = train_stages(&run, &[Stage::Vae]).unwrap_err();
    assert!(
        matches!(&err, Error::Vae(diffad::vae::Error::Io { path, .. }) if *path == export.vae.join(CONFIG_JSON)),
        "{err}"
    );
    assert!(err.to_string().contains("config.json"), "{err}");
    assert!(!run.is_done(Stage::Vae));
}

#[test]
fn a_pretrained_folder_whose_weights_do_not_fit_its_config_names_the_weights_file() {
    let work = tempfile::tempdir().unwrap();
    let (_, export) = seeded_export(work.path());
    // config.json now says 16/32 wide, the weights are 8/16 wide.
    let wider = AutoencoderKlConfig {
        block_out_channels: vec![16, 32],
        ..micro_config().vae_architecture()
    };
    std::fs::write(export.vae.join(CONFIG_JSON), wider.to_diffusers_json()).unwrap();
    let mut config = micro_config();
    config.vae.pretrained = Some(export.vae.clone());
    let run = RunDir::create(&work.path().join("second"), config).unwrap();
    let err = train_stages(&run, &[Stage::Vae]).unwrap_err();
    let weights = export.vae.join(WEIGHTS_FILE);
    assert!(
        matches!(&err, Error::Vae(diffad::vae::Error::WeightsMismatch { path, .. }) if *path == weights),
        "{err}"
    );
    assert!(err.to_string().contains("encoder.conv_in.weight"), "{err}");
    assert!(!run.is_done(Stage::Vae));
}

#[test]
fn a_pretrained_folder_with_other_latents_than_the_config_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let (_, export) = seeded_export(work.path());
    let mut config = micro_config();
    config.vae.pretrained = Some(export.vae.clone());
    config.vae.latent_channels = 8;
    let run = RunDir::create(&work.path().join("second"), config).unwrap();
    let err = train_stages(&run, &[Stage::Vae]).unwrap_err();
    assert!(
        matches!(&err, Error::Config { path, message } if *path == export.vae.join(CONFIG_JSON) && message.contains("4-channel")),
        "{err}"
    );
}

#[test]
fn exporting_needs_both_stages_and_fitting_weights() {
    let work = tempfile::tempdir().unwrap();
    let run = seeded_run(&work.path().join("run"), micro_config(), SEED);
    let out = work.path().join("export");

    // Weights of another UNet architecture: the error names the run's file.
    let mut other = micro_config();
    other.ldm.model_channels = 16;
    let vars = VarMap::new();
    let vb = diffad::nn::init::seeded_var_builder(&vars, 0, DType::F32, &Device::Cpu);
    UNet::new(other.unet_architecture(), vb).unwrap();
    vars.save(run.weights(Stage::Ldm)).unwrap();
    let err = export_diffusers(&run, &out).unwrap_err();
    assert!(
        matches!(&err, Error::Diffusion(diffad::diffusion::Error::Checkpoint { path, .. }) if *path == run.weights(Stage::Ldm)),
        "{err}"
    );

    std::fs::remove_file(run.weights(Stage::Ldm)).unwrap();
    let err = export_diffusers(&run, &out).unwrap_err();
    assert!(
        matches!(&err, Error::MissingCheckpoint { path, stage: Stage::Ldm } if *path == run.weights(Stage::Ldm)),
        "{err}"
    );
    assert!(!out.join("unet").exists());
}

#[test]
fn a_diffusers_unet_folder_without_config_json_is_an_error_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let (_, export) = seeded_export(work.path());
    std::fs::remove_file(export.unet.join(CONFIG_JSON)).unwrap();
    let err = UNet::from_pretrained(&export.unet, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, diffad::diffusion::Error::Io { path, .. } if *path == export.unet.join(CONFIG_JSON)),
        "{err}"
    );
}

#[test]
fn cli_exports_a_run() {
    let work = tempfile::tempdir().unwrap();
    let run = seeded_run(&work.path().join("run"), micro_config(), SEED);
    let out = work.path().join("export");
    let status = Command::new(env!("CARGO_BIN_EXE_diffad"))
        .args(["--quiet", "export", "--run"])
        .arg(run.root())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for file in [
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }

    let missing = Command::new(env!("CARGO_BIN_EXE_diffad"))
        .args(["export", "--run"])
        .arg(work.path().join("nowhere"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");
}
