//! The `ndarray`-backed image types: constructors, views, and the
//! conversions to Candle tensors, `image` buffers and files, as round trips.

use candle_core::{DType, Device, Tensor};
use diffad_synth::{
    images_to_tensor, planes_to_tensor, procedural_texture, tensor_to_images, tensor_to_planes,
    Error, PatternKind, Plane, RgbImage,
};
use ndarray::{s, Array2, Array3, ShapeBuilder};

fn image(h: usize, w: usize, seed: u64) -> RgbImage {
    RgbImage::from_rgb8(&procedural_texture(PatternKind::Cellular, h, w, seed).unwrap()).unwrap()
}

fn ramp_plane(h: usize, w: usize) -> Plane {
    Plane::from_vec(
        h,
        w,
        (0..h * w).map(|i| i as f32 / (h * w) as f32).collect(),
    )
    .unwrap()
}

#[test]
fn arrays_and_slices_agree() {
    let img = image(5, 4, 1);
    let view = img.view();
    assert_eq!(view.dim(), (5, 4, 3));
    for y in 0..5 {
        for x in 0..4 {
            for c in 0..3 {
                assert_eq!(view[[y, x, c]], img.as_hwc()[(y * 4 + x) * 3 + c]);
            }
        }
    }
    let chw = img.to_chw_array();
    assert_eq!(chw.dim(), (3, 5, 4));
    assert_eq!(chw.as_slice().unwrap(), &img.to_chw()[..]);
    assert_eq!(RgbImage::from_chw_array(chw.view()).unwrap(), img);
    let array = img.clone().into_array();
    assert_eq!(RgbImage::from_array(array).unwrap(), img);

    let mut edited = img.clone();
    edited.view_mut()[[2, 1, 0]] = 0.25;
    assert_eq!(edited.as_hwc()[(2 * 4 + 1) * 3], 0.25);
    assert_eq!(img.clone().into_hwc(), img.as_hwc());

    let plane = ramp_plane(3, 5);
    assert_eq!(plane.view()[[2, 1]], plane.as_slice()[2 * 5 + 1]);
    assert_eq!(
        Plane::from_array(plane.clone().into_array()).unwrap(),
        plane
    );
    assert_eq!(plane.clone().into_vec(), plane.as_slice());
}

#[test]
fn non_standard_layouts_are_copied_in_row_major_order() {
    // Column-major storage.
    let f = Array2::from_shape_vec((3, 2).f(), vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let p = Plane::from_array(f).unwrap();
    assert_eq!(p.as_slice(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    // A standard-layout slice of a larger buffer (non-zero offset).
    let big = Array2::from_shape_fn((4, 3), |(y, x)| (y * 3 + x) as f32);
    let tail = big.slice_move(s![2.., ..]);
    assert!(tail.is_standard_layout());
    let p = Plane::from_array(tail).unwrap();
    assert_eq!(p.into_vec(), vec![6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
    // A strided RGB array.
    let big = Array3::from_shape_fn((4, 4, 3), |(y, x, c)| (y * 100 + x * 10 + c) as f32);
    let every_other = big.slice_move(s![..;2, ..;2, ..]);
    let img = RgbImage::from_array(every_other).unwrap();
    assert_eq!((img.height(), img.width()), (2, 2));
    assert_eq!(&img.as_hwc()[3..6], &[20.0, 21.0, 22.0]);
}

#[test]
fn constructors_validate() {
    assert!(matches!(
        RgbImage::from_array(Array3::zeros((2, 2, 4))),
        Err(Error::ArrayShape { .. })
    ));
    assert!(matches!(
        RgbImage::from_array(Array3::zeros((0, 2, 3))),
        Err(Error::ZeroSizedImage { .. })
    ));
    assert!(matches!(
        Plane::from_array(Array2::zeros((2, 0))),
        Err(Error::ZeroSizedImage { .. })
    ));
    assert!(matches!(
        RgbImage::from_chw_array(Array3::zeros((2, 2, 3)).view()),
        Err(Error::ArrayShape { .. })
    ));
    assert!(RgbImage::zeros(0, 1).is_err());
    assert_eq!(RgbImage::zeros(2, 3).unwrap().as_hwc(), &[0.0; 18]);
    match Plane::finite(2, 3, vec![0.0, 1.0, 2.0, 3.0, f32::INFINITY, 5.0]) {
        Err(Error::NonFinitePixel { y: 1, x: 1, value }) => assert!(value.is_infinite()),
        other => panic!("expected NonFinitePixel, got {other:?}"),
    }
    assert!(Plane::finite(1, 2, vec![0.5, 1.0]).is_ok());
    let p = Plane::from_vec(1, 3, vec![0.2, f32::NAN, 0.7]).unwrap();
    assert!(matches!(
        p.check_finite_pixels(),
        Err(Error::NonFinitePixel { y: 0, x: 1, .. })
    ));
    assert_eq!(p.max(), 0.7);
}

#[test]
fn binary_masks_round_trip() {
    let flags = [true, false, false, true, true, false];
    let mask = Plane::from_bool(2, 3, &flags).unwrap();
    assert_eq!(mask.as_slice(), &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    assert_eq!(mask.to_bool().as_slice().unwrap(), &flags);
    assert_eq!(mask.sum(), 3.0);
    let ramp = ramp_plane(2, 3);
    assert_eq!(
        ramp.threshold(0.4).as_slice().unwrap(),
        &[false, false, false, true, true, true]
    );
    assert!(Plane::from_bool(2, 2, &flags).is_err());
    // 8-bit grey: masks are 0/255 and thresholded at 127.
    let luma = mask.to_luma8();
    assert_eq!(luma.as_raw(), &[255, 0, 0, 255, 255, 0]);
    assert_eq!(Plane::mask_from_luma8(&luma).unwrap(), mask);
    assert_eq!(Plane::from_luma8(&luma).unwrap(), mask);
}

#[test]
fn tensors_round_trip() {
    let dev = Device::Cpu;
    let imgs: Vec<RgbImage> = (0..3).map(|i| image(6, 5, i)).collect();
    let batch = images_to_tensor(&imgs, &dev).unwrap();
    assert_eq!(batch.dims(), &[3, 3, 6, 5]);
    for (i, img) in imgs.iter().enumerate() {
        let one = batch.get(i).unwrap();
        assert_eq!(
            one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            img.to_chw()
        );
    }
    assert_eq!(tensor_to_images(&batch).unwrap(), imgs);
    assert_eq!(
        tensor_to_images(&batch.to_dtype(DType::F64).unwrap()).unwrap(),
        imgs
    );
    assert!(matches!(
        images_to_tensor(&[], &dev),
        Err(Error::EmptyBatch)
    ));
    assert!(matches!(
        images_to_tensor(&[imgs[0].clone(), image(5, 5, 9)], &dev),
        Err(Error::SizeMismatch { index: 1, .. })
    ));
    assert!(matches!(
        tensor_to_images(&batch.get(0).unwrap()),
        Err(Error::TensorShape(_))
    ));

    let planes: Vec<Plane> = vec![ramp_plane(4, 3), Plane::filled(4, 3, 1.0).unwrap()];
    let t = planes_to_tensor(&planes, &dev).unwrap();
    assert_eq!(t.dims(), &[2, 1, 4, 3]);
    assert_eq!(tensor_to_planes(&t).unwrap(), planes);
    assert_eq!(tensor_to_planes(&t.squeeze(1).unwrap()).unwrap(), planes);
    let one = planes[0].to_tensor(&dev).unwrap();
    assert_eq!(one.dims(), &[1, 4, 3]);
    assert_eq!(Plane::from_tensor(&one).unwrap(), planes[0]);
    let hw = planes[0].to_tensor_hw(&dev).unwrap();
    assert_eq!(hw.dims(), &[4, 3]);
    assert_eq!(Plane::from_tensor(&hw).unwrap(), planes[0]);
    let bad = Tensor::zeros((2, 4, 3), DType::F32, &dev).unwrap();
    assert!(matches!(
        Plane::from_tensor(&bad),
        Err(Error::TensorShape(_))
    ));
}

#[test]
fn files_round_trip_and_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(7, 9, 3);
    let path = dir.path().join("img.png");
    img.save(&path).unwrap();
    // PNG is lossless and the image came from 8 bits: exact round trip.
    assert_eq!(RgbImage::open(&path).unwrap(), img);

    let mask = Plane::from_bool(3, 2, &[true, false, false, true, false, false]).unwrap();
    let mask_path = dir.path().join("mask.png");
    mask.save(&mask_path).unwrap();
    assert_eq!(Plane::open_mask(&mask_path).unwrap(), mask);

    let missing = dir.path().join("missing.png");
    match RgbImage::open(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io, got {other:?}"),
    }
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"not a png").unwrap();
    match Plane::open_mask(&corrupt) {
        Err(Error::Decode { path, .. }) => assert_eq!(path, corrupt),
        other => panic!("expected Decode, got {other:?}"),
    }
    let unwritable = dir.path().join("no_such_dir").join("x.png");
    match img.save(&unwritable) {
        Err(Error::Encode { path, .. }) => assert_eq!(path, unwritable),
        other => panic!("expected Encode, got {other:?}"),
    }
}
