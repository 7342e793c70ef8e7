//! Texture sources: folders (DTD layout, corrupt files, empty folders),
//! the procedural generator and self-augmentation.

use std::path::Path;

use diffad_synth::{
    procedural_texture, shuffle_tiles, CorruptFilePolicy, Error, FolderOptions, FolderTextures,
    PatternKind, PatternStyle, ProceduralTextures, RgbImage, SelfAugmentation, TextureSource,
};
use image::RgbImage as Rgb8Image;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn write_png(path: &Path, w: u32, h: u32, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    Rgb8Image::from_pixel(w, h, image::Rgb([shade, 255 - shade, 7]))
        .save(path)
        .unwrap();
}

fn dtd_like(root: &Path) {
    write_png(&root.join("banded/banded_0001.jpg"), 40, 30, 10);
    write_png(&root.join("banded/banded_0002.png"), 20, 20, 60);
    write_png(&root.join("dotted/sub/dotted_0001.JPG"), 50, 64, 120);
    std::fs::write(root.join("dotted/labels.txt"), "not an image").unwrap();
}

fn normal(h: usize, w: usize) -> RgbImage {
    RgbImage::filled(h, w, [0.5, 0.5, 0.5]).unwrap()
}

#[test]
fn folder_source_lists_recursively_and_resizes() {
    let dir = tempfile::tempdir().unwrap();
    dtd_like(dir.path());
    let src = FolderTextures::open(dir.path(), FolderOptions::default()).unwrap();
    assert_eq!(src.files().len(), 3);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for _ in 0..10 {
        let t = src.draw(&normal(17, 23), &mut rng).unwrap();
        assert_eq!(t.dimensions(), (23, 17));
    }
    // Preloaded: same files, same size handling.
    let opts = FolderOptions {
        preload: Some((32, 32)),
        ..FolderOptions::default()
    };
    let pre = FolderTextures::open(dir.path(), opts).unwrap();
    assert_eq!(pre.files().len(), 3);
    assert_eq!(
        pre.draw(&normal(32, 32), &mut rng).unwrap().dimensions(),
        (32, 32)
    );
}

#[test]
fn corrupt_files_are_named_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    dtd_like(dir.path());
    let bad = dir.path().join("banded/broken.jpg");
    std::fs::write(&bad, b"\xFF\xD8\xFF\xE0 truncated jpeg").unwrap();

    // Preloading with the default policy fails on the broken file, by name.
    let opts = FolderOptions {
        preload: Some((16, 16)),
        ..FolderOptions::default()
    };
    match FolderTextures::open(dir.path(), opts) {
        Err(e @ Error::Decode { .. }) => assert!(e.to_string().contains("broken.jpg"), "{e}"),
        other => panic!("expected Decode error, got {other:?}"),
    }

    // Lazily: some draw hits the broken file and reports it.
    let src = FolderTextures::open(dir.path(), FolderOptions::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let errors: Vec<Error> = (0..40)
        .filter_map(|_| src.draw(&normal(8, 8), &mut rng).err())
        .collect();
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(
            matches!(e, Error::Decode { path, .. } if path == &bad),
            "{e}"
        );
    }

    // Skipping: every draw succeeds and the file is recorded.
    let opts = FolderOptions {
        on_corrupt: CorruptFilePolicy::SkipWithWarning,
        ..FolderOptions::default()
    };
    let src = FolderTextures::open(dir.path(), opts).unwrap();
    for _ in 0..40 {
        src.draw(&normal(8, 8), &mut rng).unwrap();
    }
    assert_eq!(src.skipped(), vec![bad.clone()]);
    let opts = FolderOptions {
        on_corrupt: CorruptFilePolicy::SkipWithWarning,
        preload: Some((8, 8)),
    };
    assert_eq!(
        FolderTextures::open(dir.path(), opts)
            .unwrap()
            .files()
            .len(),
        3
    );
}

#[test]
fn empty_or_missing_folders_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("empty_category")).unwrap();
    std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
    assert!(matches!(
        FolderTextures::open(dir.path(), FolderOptions::default()),
        Err(Error::EmptyTextureFolder { .. })
    ));
    assert!(matches!(
        FolderTextures::open(dir.path().join("nope"), FolderOptions::default()),
        Err(Error::Io { .. })
    ));
    // Only corrupt files, skipped: nothing usable left.
    std::fs::write(dir.path().join("a.png"), b"garbage").unwrap();
    let opts = FolderOptions {
        on_corrupt: CorruptFilePolicy::SkipWithWarning,
        preload: Some((8, 8)),
    };
    assert!(matches!(
        FolderTextures::open(dir.path(), opts),
        Err(Error::EmptyTextureFolder { .. })
    ));
}

#[test]
fn procedural_textures_are_seeded_and_any_size() {
    for kind in PatternKind::ALL {
        let a = procedural_texture(kind, 37, 53, 9).unwrap();
        assert_eq!(a.dimensions(), (53, 37));
        assert_eq!(a, procedural_texture(kind, 37, 53, 9).unwrap());
        assert_ne!(a, procedural_texture(kind, 37, 53, 10).unwrap());
        // Not a flat image: the pattern spans a range of values.
        let (lo, hi) = a
            .as_raw()
            .iter()
            .fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 20, "{kind:?}: flat texture {lo}..{hi}");
    }
    // One style, different streams: same colours, different details.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let style = PatternStyle::random(PatternKind::Cellular, &mut rng);
    let a = style
        .render(32, 32, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let b = style
        .render(32, 32, &mut ChaCha8Rng::seed_from_u64(2))
        .unwrap();
    assert_ne!(a, b);
    assert!(matches!(
        procedural_texture(PatternKind::Stripes, 0, 4, 0),
        Err(Error::ZeroSizedImage { .. })
    ));
    let bad = PatternStyle {
        frequency: 0.0,
        ..style
    };
    assert!(matches!(
        bad.render(8, 8, &mut rng),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(ProceduralTextures::new(vec![]).is_err());
    let src = ProceduralTextures::default();
    assert_eq!(
        src.draw(&normal(5, 300), &mut rng).unwrap().dimensions(),
        (300, 5)
    );
}

#[test]
fn tile_shuffle_is_a_permutation_of_tiles() {
    let img = Rgb8Image::from_fn(16, 16, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, 0]));
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let out = shuffle_tiles(&img, 8, &mut rng);
    assert_ne!(out, img);
    // Each 2x2 tile is constant; the multiset of tiles is unchanged.
    let tiles = |im: &Rgb8Image| {
        let mut v: Vec<[u8; 3]> = (0..64)
            .map(|t| im.get_pixel((t % 8) * 2, (t / 8) * 2).0)
            .collect();
        v.sort();
        v
    };
    assert_eq!(tiles(&out), tiles(&img));
    // Non-multiple sizes: the leftover border stays in place.
    let img = Rgb8Image::from_fn(19, 17, |x, y| image::Rgb([x as u8, y as u8, 1]));
    let out = shuffle_tiles(&img, 8, &mut rng);
    for y in 0..17 {
        assert_eq!(out.get_pixel(18, y), img.get_pixel(18, y));
    }
    for x in 0..19 {
        assert_eq!(out.get_pixel(x, 16), img.get_pixel(x, 16));
    }
    // The self-augmentation source returns a texture of the image's size.
    let src = SelfAugmentation::default();
    assert!(!src.needs_augmentation());
    let n = RgbImage::from_rgb8(&img).unwrap();
    assert_eq!(src.draw(&n, &mut rng).unwrap().dimensions(), (19, 17));
}
