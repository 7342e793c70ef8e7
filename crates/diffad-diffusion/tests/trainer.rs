//! The LDM trainer: learning, gradients, noisy-condition draws, checkpoints and resume,
//! the image loop through a `LatentCodec`.

use candle_core::{Device, Tensor};
use diffad_diffusion::{
    AdamWConfig, ConditionMode, Denoiser, LdmTrainConfig, LdmTrainer, Silent, TrainLoopOptions,
    UNetConfig,
};
use diffad_nn::latent::{DiagonalGaussian, LatentCodec};

fn quiet(mode: ConditionMode) -> LdmTrainConfig {
    LdmTrainConfig {
        mode,
        optimizer: AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        },
        ema_decay: Some(0.9),
        seed: 4,
        ..LdmTrainConfig::default()
    }
}

fn latents(seed: u64) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let mut rng = diffad_diffusion::noise::sample_rng(seed, 0, 0);
    let z = Tensor::from_vec(
        diffad_diffusion::noise::standard_normal(&mut rng, 2 * 4 * 8 * 8),
        (2, 4, 8, 8),
        &dev,
    )
    .unwrap();
    let c = (z.affine(0.8, 0.1).unwrap()).tanh().unwrap();
    (z, c)
}

#[test]
fn training_reduces_the_loss_on_a_fixed_batch() {
    let mut trainer = LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::NoisyCondition),
        &Device::Cpu,
    )
    .unwrap();
    let (z, c) = latents(0);
    let before = trainer
        .loss(&z, &c, 99, false)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    for _ in 0..15 {
        trainer.train_step(&z, &c, 99).unwrap();
    }
    let after = trainer
        .loss(&z, &c, 99, false)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(after < 0.7 * before, "loss {before} -> {after}");
    assert_eq!(trainer.step(), 15);
}

#[test]
fn every_parameter_gets_a_gradient_through_the_training_loss() {
    for mode in [ConditionMode::NoisyCondition, ConditionMode::Unconditional] {
        let config = if mode.is_conditional() {
            UNetConfig::tiny()
        } else {
            UNetConfig::tiny().unconditional()
        };
        let trainer = LdmTrainer::new(config, quiet(mode), &Device::Cpu).unwrap();
        let (z, c) = latents(1);
        let loss = trainer.loss(&z, &c, 3, true).unwrap();
        let missing = diffad_nn::testing::params_without_gradient(trainer.varmap(), &loss).unwrap();
        assert!(missing.is_empty(), "{mode:?}: no gradient for {missing:?}");
    }
}

#[test]
fn condition_timesteps_are_independent_of_denoising_timesteps() {
    let trainer = LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::NoisyCondition),
        &Device::Cpu,
    )
    .unwrap();
    let d = trainer.training_draws(8, 4000, [1, 1, 1], 1).unwrap();
    assert_eq!((d.t.len(), d.t_c.len()), (4000, 4000));
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    let (mt, mc) = (mean(&d.t), mean(&d.t_c));
    // Uniform on 0..999: mean 499.5, sd of the mean ~4.6.
    assert!(
        (mt - 499.5).abs() < 25.0 && (mc - 499.5).abs() < 25.0,
        "{mt} {mc}"
    );
    let cov =
        d.t.iter()
            .zip(&d.t_c)
            .map(|(&a, &b)| (a as f64 - mt) * (b as f64 - mc))
            .sum::<f64>()
            / 4000.0;
    let corr = cov / (1000.0f64.powi(2) / 12.0);
    assert!(corr.abs() < 0.06, "corr(t, t_c) = {corr}");
    assert!(d.condition_eps.is_some());
    // The clean mode draws no condition noise.
    let clean = LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::CleanCondition),
        &Device::Cpu,
    )
    .unwrap();
    let d = clean.training_draws(8, 3, [4, 8, 8], 4).unwrap();
    assert!(d.t_c.is_empty() && d.condition_eps.is_none());
    // Same seed, same draws.
    let again = clean.training_draws(8, 3, [4, 8, 8], 4).unwrap();
    assert_eq!(d.t, again.t);
}

#[test]
fn checkpoints_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ldm.safetensors");
    let mut a = LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::NoisyCondition),
        &Device::Cpu,
    )
    .unwrap();
    let batches: Vec<Result<(Tensor, Tensor), String>> = (0..3).map(|i| Ok(latents(i))).collect();
    let opts = TrainLoopOptions {
        checkpoint: Some(path.clone()),
        checkpoint_every: Some(2),
        ..Default::default()
    };
    let summary = a.train(batches, &opts, &mut Silent).unwrap();
    assert_eq!((summary.steps, summary.step), (3, 3));
    assert!(summary.mean_loss.is_finite() && summary.steps_per_second > 0.0);
    assert!(path.exists() && !dir.path().join("ldm.safetensors.tmp").exists());

    let mut b = LdmTrainer::resume(&path, None, &Device::Cpu).unwrap();
    assert_eq!(b.step(), 3);
    assert_eq!(b.config(), a.config());
    let (z, c) = latents(7);
    let la = a.train_step(&z, &c, 123).unwrap();
    let lb = b.train_step(&z, &c, 123).unwrap();
    assert_eq!(la, lb, "resumed trainer diverged");
    // Weights and EMA agree after the extra step.
    let t = Tensor::new(&[500u32, 20], &Device::Cpu).unwrap();
    let pa = a.predict(&z, &t, Some(&c)).unwrap();
    let pb = b.predict(&z, &t, Some(&c)).unwrap();
    assert_eq!(
        (pa - pb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    let ea = a.ema_unet().unwrap().predict(&z, &t, Some(&c)).unwrap();
    let eb = b.ema_unet().unwrap().predict(&z, &t, Some(&c)).unwrap();
    assert_eq!(
        (ea - eb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );

    // The exported network loads as a diffusers-layout UNet.
    let export = dir.path().join("unet.safetensors");
    a.export_unet(&export, true).unwrap();
    let loaded = diffad_diffusion::UNet::load(UNetConfig::tiny(), &export, &Device::Cpu).unwrap();
    let el = loaded.predict(&z, &t, Some(&c)).unwrap();
    let ea = a.ema_unet().unwrap().predict(&z, &t, Some(&c)).unwrap();
    assert_eq!(
        (el - ea)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn bad_checkpoints_and_configs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    assert!(matches!(
        LdmTrainer::resume(&junk, None, &Device::Cpu),
        Err(diffad_diffusion::Error::Checkpoint { .. })
    ));
    assert!(matches!(
        LdmTrainer::resume(dir.path().join("absent"), None, &Device::Cpu),
        Err(diffad_diffusion::Error::Io { .. })
    ));
    // A truncated real checkpoint.
    let path = dir.path().join("ok.safetensors");
    let t = LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::CleanCondition),
        &Device::Cpu,
    )
    .unwrap();
    t.save_checkpoint(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        LdmTrainer::resume(&path, None, &Device::Cpu),
        Err(diffad_diffusion::Error::Checkpoint { .. })
    ));
    // Conditional modes need condition channels; unconditional ones must not have them.
    assert!(LdmTrainer::new(
        UNetConfig::tiny().unconditional(),
        quiet(ConditionMode::NoisyCondition),
        &Device::Cpu
    )
    .is_err());
    assert!(LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::Unconditional),
        &Device::Cpu
    )
    .is_err());
    // NaN latents stop training with a typed error.
    let mut t = LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::CleanCondition),
        &Device::Cpu,
    )
    .unwrap();
    let nan = Tensor::full(f32::NAN, (1, 4, 8, 8), &Device::Cpu).unwrap();
    assert!(matches!(
        t.train_step(&nan, &nan, 0),
        Err(diffad_diffusion::Error::NonFiniteLoss { .. })
    ));
    // A failing batch iterator is reported, not panicked on.
    let batches: Vec<Result<(Tensor, Tensor), String>> = vec![Err("disk on fire".into())];
    let err = t
        .train(batches, &TrainLoopOptions::default(), &mut Silent)
        .unwrap_err();
    assert!(err.to_string().contains("disk on fire"));
}

/// A stand-in codec: 4x average pooling, the mean of RGB as a 4th channel, fixed variance.
struct PoolCodec;

impl LatentCodec for PoolCodec {
    fn encode_posterior(&self, images: &Tensor) -> candle_core::Result<DiagonalGaussian> {
        let pooled = images.avg_pool2d(4)?;
        let gray = pooled.mean_keepdim(1)?;
        let mean = Tensor::cat(&[&pooled, &gray], 1)?.affine(2.0, -1.0)?;
        let logvar = (mean.zeros_like()? - 4.0)?;
        DiagonalGaussian::new(mean, logvar).map_err(candle_core::Error::wrap)
    }
    fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        latents
            .narrow(1, 0, 3)?
            .affine(0.5, 0.5)?
            .upsample_nearest2d(latents.dim(2)? * 4, latents.dim(3)? * 4)
    }
    fn latent_channels(&self) -> usize {
        4
    }
    fn downsample_factor(&self) -> usize {
        4
    }
}

#[test]
fn trains_on_images_through_a_latent_codec() {
    let dev = Device::Cpu;
    let mut trainer = LdmTrainer::new(
        UNetConfig::tiny(),
        quiet(ConditionMode::NoisyCondition),
        &dev,
    )
    .unwrap();
    let x = Tensor::rand(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
    let x_a = x.affine(-1.0, 1.0).unwrap();
    let batches = std::iter::repeat_with(|| Ok::<_, String>((x.clone(), x_a.clone())));
    let s = trainer
        .train_on_images(
            &PoolCodec,
            batches,
            &TrainLoopOptions {
                max_steps: Some(2),
                ..Default::default()
            },
            &mut Silent,
        )
        .unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.last_loss.is_finite());
    // And reconstructs images end to end.
    let unet = trainer.ema_unet().unwrap();
    let opts = diffad_diffusion::ReconstructOptions {
        steps: 2,
        ..Default::default()
    };
    let (z_r, x_r) = diffad_diffusion::reconstruct_images(
        &PoolCodec,
        &unet,
        &diffad_diffusion::Ddim::diffad().unwrap(),
        &x_a,
        &opts,
    )
    .unwrap();
    assert_eq!(z_r.dims(), &[2, 4, 8, 8]);
    assert_eq!(x_r.dims(), &[2, 3, 32, 32]);
}
