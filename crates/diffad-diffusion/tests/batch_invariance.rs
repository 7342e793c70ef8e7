//! A sample's denoiser output does not depend on the batch it is in.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use diffad_diffusion::{UNet, UNetConfig};

fn unet(config: UNetConfig) -> UNet {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = diffad_nn::init::seeded_var_builder(&varmap, 3, DType::F32, &dev);
    UNet::new(config, vb).unwrap()
}

fn check(config: UNetConfig, b: usize, side: usize) {
    let dev = Device::Cpu;
    let c = config.in_channels;
    let net = unet(config);
    let x = Tensor::randn(0f32, 1.0, (b, c, side, side), &dev).unwrap();
    let t = Tensor::from_vec(vec![401u32; b], b, &dev).unwrap();
    let batched = net.forward(&x, &t, false).unwrap();
    for i in 0..b {
        let one = net
            .forward(
                &x.narrow(0, i, 1).unwrap(),
                &Tensor::from_vec(vec![401u32], 1, &dev).unwrap(),
                false,
            )
            .unwrap();
        let a = batched
            .narrow(0, i, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let o = one.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = a
            .iter()
            .zip(&o)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert_eq!(diff, 0.0, "sample {i} of {b}: max diff {diff}");
    }
}

#[test]
fn tiny_unet_batch_8_equals_batch_1() {
    check(
        UNetConfig {
            attention: vec![false, true],
            ..UNetConfig::tiny()
        },
        8,
        16,
    );
}

#[test]
fn winograd_width_unet_batch_3_equals_batch_1() {
    // 128 and 256 channels on 32x32 and 16x16 maps take the Winograd convolutions.
    check(
        UNetConfig {
            block_out_channels: vec![128, 256],
            attention: vec![false, true],
            layers_per_block: 1,
            attention_head_dim: 32,
            norm_num_groups: 32,
            ..UNetConfig::diffad()
        },
        3,
        32,
    );
}
