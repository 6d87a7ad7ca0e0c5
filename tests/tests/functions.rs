//! The functions on the real weights and the real photo, through their
//! handlers and the proto types, with no services.

use std::sync::OnceLock;

use image::{ImageFormat, RgbImage, imageops};
use lambdex_functions::handler::{
    FaceCropAnswer, FaceCropEvent, classify_request, face_crop_event,
};
use lambdex_functions::{Classifier, FaceCropConfig, FaceCropper, FunctionError, Task, models};
use lambdex_proto::limits::MAX_IMAGES_PER_REQUEST;
use lambdex_proto::{
    Base64Bytes, ClassifyRequest, ClassifyResponse, ErrorType, FaceCropBatchRequest,
    FaceCropRequest, FaceCropResponse, Gender, ImageResult, Prediction,
};
use lambdex_tests::{
    ASTRONAUT_FACE, astronaut, astronaut_png, encode, encode_jpeg, models_dir, no_face,
    required_scenes, with_exif_orientation,
};

fn cropper() -> &'static FaceCropper {
    static CROPPER: OnceLock<FaceCropper> = OnceLock::new();
    CROPPER.get_or_init(|| {
        FaceCropper::load(&models_dir(), FaceCropConfig::default()).expect("the detector loads")
    })
}

fn classifier(task: Task) -> &'static Classifier {
    static AGE: OnceLock<Classifier> = OnceLock::new();
    static GENDER: OnceLock<Classifier> = OnceLock::new();
    let cell = match task {
        Task::Age => &AGE,
        Task::Gender => &GENDER,
    };
    cell.get_or_init(|| models::load_classifier(&models_dir(), task).expect("the model loads"))
}

fn crop(bytes: Vec<u8>) -> Result<FaceCropResponse, FunctionError> {
    cropper().crop(&FaceCropRequest {
        image: Base64Bytes(bytes),
    })
}

/// Each net reads the chip of its own input size, as the coordinator sends.
fn classify(task: Task, response: &FaceCropResponse) -> ClassifyResponse {
    let size = classifier(task).input_size();
    let request = ClassifyRequest {
        crops: response
            .faces
            .iter()
            .map(|f| f.chip(Some(size)).clone())
            .collect(),
    };
    classify_request(classifier(task), &request).expect("classifies")
}

fn centre(face: &lambdex_proto::CroppedFace) -> [f32; 2] {
    let c = face.bbox.center();
    [c.x, c.y]
}

fn inside(point: [f32; 2], area: [f32; 4]) -> bool {
    point[0] > area[0] && point[0] < area[2] && point[1] > area[1] && point[1] < area[3]
}

#[test]
fn the_astronaut_has_one_face_where_it_is() {
    let response = crop(astronaut_png()).expect("crops");
    assert_eq!(response.faces.len(), 1, "{:?}", response.faces);
    let face = &response.faces[0];
    assert!(inside(centre(face), ASTRONAUT_FACE), "{:?}", face.bbox);
    assert!(
        face.bbox.width > 60.0 && face.bbox.width < 140.0,
        "{:?}",
        face.bbox
    );
    assert!(face.score > 0.75, "score {}", face.score);
    // The subject's right eye is on the image's left, and both are above the mouth.
    let k = face.keypoints;
    assert!(
        k.right_eye.x < k.left_eye.x && k.left_eye.y < k.mouth.y,
        "{k:?}"
    );
    assert_eq!((face.crop.width, face.crop.height), (64, 64));
    assert_eq!((response.image.width, response.image.height), (512, 512));
    assert_eq!(response.detector.sha256.len(), 64);
}

#[test]
fn each_face_comes_with_dlibs_landmarks_and_a_chip_per_net_size() {
    let response = crop(astronaut_png()).expect("crops");
    let face = &response.faces[0];
    assert_eq!((face.crop.width, face.crop.height), (64, 64));
    let sizes: Vec<_> = face.chips.iter().map(|c| (c.width, c.height)).collect();
    assert_eq!(sizes, [(32, 32)]);
    // The landmarks are the predictor's, in the box drawn for the face:
    // two corners of each eye either side of the nose, below them.
    let photo = astronaut();
    let detection = &cropper().detect(&photo).expect("detects")[0];
    let (_, points) = cropper().landmarks(&photo, detection);
    let got: Vec<[i64; 2]> = face
        .landmarks
        .iter()
        .map(|p| [p.x as i64, p.y as i64])
        .collect();
    assert_eq!(got, points);
    let [outer_left, inner_left, outer_right, inner_right, nose] = points;
    assert!(
        outer_right[0] < inner_right[0] && inner_right[0] < nose[0],
        "{points:?}"
    );
    assert!(
        nose[0] < inner_left[0] && inner_left[0] < outer_left[0],
        "{points:?}"
    );
    assert!(
        nose[1] > inner_left[1] + 10 && nose[1] > inner_right[1] + 10,
        "{points:?}"
    );
    // Each chip is cut from the image at its size, not resized from another.
    let chip = |crop: &lambdex_proto::Crop| {
        image::load_from_memory(&crop.data.0)
            .expect("a PNG")
            .to_rgb8()
    };
    let small = chip(&face.chips[0]);
    let large = chip(&face.crop);
    let shrunk = imageops::resize(&large, 32, 32, imageops::FilterType::Triangle);
    assert_ne!(small.as_raw(), shrunk.as_raw());
    assert_eq!(
        small.as_raw(),
        lambdex_functions::chip::face_chip(&photo, &points, 32, 0.2).as_raw()
    );
}

#[test]
fn the_astronaut_is_a_woman_between_20_and_50() {
    let response = crop(astronaut_png()).expect("crops");
    let gender = classify(Task::Gender, &response);
    let Prediction::Gender(g) = &gender.predictions[0] else {
        panic!("a gender prediction: {gender:?}");
    };
    assert_eq!(g.label, Gender::Female);
    assert!(g.probability >= 0.8, "female with p = {}", g.probability);
    assert_eq!(gender.model.id, "gender-v1");

    let age = classify(Task::Age, &response);
    let Prediction::Age(a) = &age.predictions[0] else {
        panic!("an age prediction: {age:?}");
    };
    assert!((20.0..=50.0).contains(&a.years), "age {}", a.years);
    assert!(a.std_dev > 0.0 && a.top_bins.len() == 3, "{a:?}");
    assert_eq!(
        age.model.sha256,
        "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
    );
}

#[test]
fn an_image_without_a_face_gives_zero_faces() {
    let response = crop(encode(&no_face(), ImageFormat::Png)).expect("crops");
    assert!(response.faces.is_empty(), "{:?}", response.faces);
    assert_eq!(response.image.width, 640);
}

#[test]
fn two_copies_side_by_side_give_a_face_in_each_half() {
    let photo = astronaut();
    let mut pair = RgbImage::new(1024, 512);
    imageops::replace(&mut pair, &photo, 0, 0);
    imageops::replace(&mut pair, &photo, 512, 0);
    let response = crop(encode(&pair, ImageFormat::Png)).expect("crops");
    assert_eq!(response.faces.len(), 2, "{:?}", response.faces);
    for half in [0.0, 512.0] {
        let expected = [
            ASTRONAUT_FACE[0] + half,
            ASTRONAUT_FACE[1],
            ASTRONAUT_FACE[2] + half,
            ASTRONAUT_FACE[3],
        ];
        assert!(
            response.faces.iter().any(|f| inside(centre(f), expected)),
            "no face at {expected:?}: {:?}",
            response.faces
        );
    }
    // Both faces go to the classifier in one batch, one answer each.
    assert_eq!(classify(Task::Gender, &response).predictions.len(), 2);
}

#[test]
fn a_photo_stored_sideways_with_an_exif_orientation_is_turned_upright() {
    // Rotate the photo 90° anticlockwise, as a camera held sideways stores
    // it, and tag it "rotate 90° clockwise to display" (6).
    let mut tall = RgbImage::from_pixel(512, 640, image::Rgb([200, 200, 200]));
    imageops::replace(&mut tall, &astronaut(), 0, 64);
    let stored = imageops::rotate270(&tall);
    let jpeg = with_exif_orientation(&encode_jpeg(&stored, 92), 6);

    let response = crop(jpeg).expect("crops");
    assert_eq!(
        (response.image.width, response.image.height),
        (512, 640),
        "the frame is upright"
    );
    assert_eq!(response.faces.len(), 1, "{:?}", response.faces);
    let face = ASTRONAUT_FACE;
    assert!(inside(
        centre(&response.faces[0]),
        [face[0], face[1] + 64.0, face[2], face[3] + 64.0]
    ));

    // Without the tag the face lies on its side, and the detector, trained
    // on upright faces, must not be what made the test pass.
    let untagged = crop(encode_jpeg(&stored, 92)).expect("crops");
    assert_eq!((untagged.image.width, untagged.image.height), (640, 512));
}

#[test]
fn corrupt_bytes_give_a_clear_invalid_image_error() {
    for (bytes, expected) in [
        (b"definitely not an image".to_vec(), "not an image"),
        (Vec::new(), "empty"),
        (astronaut_png()[..2000].to_vec(), "corrupt"),
    ] {
        let error = crop(bytes).expect_err("refused");
        assert_eq!(error.error_type(), ErrorType::InvalidImage, "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

/// `event`'s answer through the function's handler, as JSON.
fn face_crop_json(event: serde_json::Value) -> Result<serde_json::Value, FunctionError> {
    let event: FaceCropEvent = serde_json::from_value(event).expect("an event");
    let answer = face_crop_event(cropper(), event)?;
    Ok(serde_json::to_value(answer).expect("serialises"))
}

#[test]
fn a_batch_is_answered_image_by_image_and_a_bad_image_fails_alone() {
    let images = [
        astronaut_png(),
        astronaut_png()[..2000].to_vec(),
        encode_jpeg(&no_face(), 90),
    ];
    let request = FaceCropBatchRequest {
        images: images
            .iter()
            .map(|bytes| FaceCropRequest {
                image: Base64Bytes(bytes.clone()),
            })
            .collect(),
    };
    let FaceCropAnswer::Batch(response) =
        face_crop_event(cropper(), request.into()).expect("answers")
    else {
        panic!("a batch answers a batch");
    };
    assert_eq!(response.results.len(), 3);
    let alone = crop(astronaut_png()).expect("crops");
    match &response.results[0] {
        ImageResult::Cropped(cropped) => {
            assert_eq!(cropped.faces.len(), 1);
            assert_eq!(cropped.faces[0].bbox, alone.faces[0].bbox);
            assert_eq!(cropped.faces[0].crop.data, alone.faces[0].crop.data);
        }
        other => panic!("the astronaut is cropped: {other:?}"),
    }
    match &response.results[1] {
        ImageResult::Failed(failure) => {
            assert_eq!(failure.error_type, ErrorType::InvalidImage);
            assert!(failure.error_message.contains("corrupt"), "{failure:?}");
        }
        other => panic!("the truncated image fails: {other:?}"),
    }
    match &response.results[2] {
        ImageResult::Cropped(cropped) => assert!(cropped.faces.is_empty()),
        other => panic!("the empty scene is cropped: {other:?}"),
    }
}

#[test]
fn face_crop_takes_one_image_or_a_batch_and_refuses_both_neither_or_too_many() {
    let image = Base64Bytes(encode_jpeg(&no_face(), 90));
    let one = serde_json::json!({ "image": image });
    let answer = face_crop_json(one.clone()).expect("one image");
    assert!(
        answer["faces"].as_array().is_some_and(Vec::is_empty),
        "{answer}"
    );
    let batch = serde_json::json!({ "images": [one.clone()] });
    let answer = face_crop_json(batch).expect("a batch of one");
    assert!(
        answer["results"][0]["cropped"]["faces"].is_array(),
        "{answer}"
    );

    let both = serde_json::json!({ "image": image, "images": [one.clone()] });
    let too_many = serde_json::json!({ "images": vec![one; MAX_IMAGES_PER_REQUEST + 1] });
    for (event, expected) in [
        (both, "both"),
        (serde_json::json!({}), "neither"),
        (too_many, "over the limit of 16"),
    ] {
        let error = face_crop_json(event).expect_err("refused");
        assert_eq!(error.error_type(), ErrorType::InvalidRequest, "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn classify_refuses_crops_that_are_not_images() {
    let request = ClassifyRequest {
        crops: vec![lambdex_proto::Crop {
            format: lambdex_proto::CropFormat::Png,
            width: 64,
            height: 64,
            data: Base64Bytes(b"nope".to_vec()),
        }],
    };
    let error = classify_request(classifier(Task::Age), &request).expect_err("refused");
    assert_eq!(error.error_type(), ErrorType::InvalidRequest);
    assert!(error.to_string().contains("crop 0"), "{error}");
}

#[test]
fn detection_finds_every_face_of_the_required_scenes() {
    let mut report = Vec::new();
    let mut missed = Vec::new();
    for scene in required_scenes() {
        let response = crop(encode(&scene.image, ImageFormat::Png)).expect("crops");
        let centres: Vec<[f32; 2]> = response.faces.iter().map(centre).collect();
        let (found, strays) = scene.score(&centres);
        report.push(format!(
            "{}: {found}/{} found, {strays} stray",
            scene.name,
            scene.faces.len()
        ));
        if found != scene.faces.len() || strays > 0 {
            missed.push(scene.name.clone());
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        missed.is_empty(),
        "missed or stray faces in {missed:?}:\n{}",
        report.join("\n")
    );
}

#[test]
fn a_batch_gives_each_crop_the_answer_it_gets_alone() {
    let photo = astronaut();
    let mut pair = RgbImage::new(1024, 512);
    imageops::replace(&mut pair, &photo, 0, 0);
    imageops::replace(&mut pair, &imageops::flip_horizontal(&photo), 512, 0);
    let response = crop(encode(&pair, ImageFormat::Png)).expect("crops");
    assert_eq!(response.faces.len(), 2);
    for task in Task::ALL {
        let together = classify(task, &response).predictions;
        let size = classifier(task).input_size();
        for (i, face) in response.faces.iter().enumerate() {
            let alone = classify_request(
                classifier(task),
                &ClassifyRequest {
                    crops: vec![face.chip(Some(size)).clone()],
                },
            )
            .expect("classifies")
            .predictions;
            let close = match (&together[i], &alone[0]) {
                (Prediction::Age(a), Prediction::Age(b)) => (a.years - b.years).abs() < 1e-3,
                (Prediction::Gender(a), Prediction::Gender(b)) => {
                    a.label == b.label && (a.probability - b.probability).abs() < 1e-4
                }
                _ => false,
            };
            assert!(
                close,
                "{task:?} crop {i}: {:?} vs {:?}",
                together[i], alone[0]
            );
        }
    }
}

/// Every output of `ours` within 1e-4 of `tracts`' (relative, or absolute
/// below 1).
fn assert_outputs_close(
    ours: &[tract_onnx::prelude::TValue],
    tracts: &[tract_onnx::prelude::TValue],
    what: &str,
) {
    use lambdex_functions::onnx;

    assert_eq!(ours.len(), tracts.len());
    for (a, b) in ours.iter().zip(tracts) {
        let a = onnx::f32_values(a).expect("f32 output");
        let b = onnx::f32_values(b).expect("f32 output");
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                "{what}: {x} against {y}"
            );
        }
    }
}

#[test]
fn blazeface_runs_the_same_on_lambdex_kernels_as_on_tracts_own() {
    use lambdex_functions::kernels::simd::{self, Level};
    use lambdex_functions::kernels::{self, Choice};
    use lambdex_functions::{onnx, onnx::OnnxFile};
    use tract_onnx::prelude::*;

    // Swapped ops per model: whole residual blocks, then the 3×3 depthwise
    // convolutions (stride 1 and 2), 2×2 max pools and residual sums with
    // their ReLU of the blocks that change their channels, and the stem.
    for (file, size, swapped) in [
        (models::BLAZEFACE_FRONT, 128, 5 + 8 + 3 + 3 + 11 + 1),
        (models::BLAZEFACE_BACK, 256, 28 + 4 + 3 + 3 + 1),
    ] {
        let onnx = OnnxFile::read(&models_dir().join(file)).expect("reads");
        let shape = [1, size, size, 3];
        let mut model = onnx.typed_model(&shape).expect("loads");
        assert_eq!(
            kernels::substitute(&mut model, Choice::OURS).expect("swaps"),
            swapped,
            "{file}"
        );

        let photo = imageops::resize(&astronaut(), size as u32, size as u32, imageops::Triangle);
        let pixels = photo
            .pixels()
            .flat_map(|p| p.0.map(|v| v as f32 / 127.5 - 1.0));
        let input = tract_ndarray::Array4::from_shape_vec(shape, pixels.collect()).expect("fits");
        let input: Tensor = input.into();
        let run = |plan: &onnx::Plan| onnx::run(plan, input.clone()).expect("runs");
        let tracts = run(&onnx.tract_plan(&shape).expect("plans"));
        // Every SIMD level this CPU runs gives tract's outputs.
        let ours = onnx.plan_with(&shape, Choice::OURS).expect("plans");
        for level in Level::available() {
            let ours = simd::with_level(level, || run(&ours));
            assert_outputs_close(&ours, &tracts, &format!("{file} at {level}"));
        }
    }
}

#[test]
fn the_classifiers_run_the_same_on_lambdex_kernels_as_on_tracts_own() {
    use lambdex_functions::kernels::simd::{self, Level};
    use lambdex_functions::kernels::{self, Choice, Kernel};
    use lambdex_functions::{onnx, onnx::OnnxFile};
    use tract_onnx::prelude::*;

    // The age net's ten 3×3 convolutions over 14 × 14 pixels or fewer run
    // channels last; the gender net's, on 16 × 16 and 32 × 32, stay tract's.
    let shallow = Choice::of(&[
        Kernel::ResidualBlock,
        Kernel::StemConv,
        Kernel::Depthwise,
        Kernel::MaxPool,
        Kernel::AddRelu,
    ]);
    for (file, size, deep) in [
        ("age-gender/age-v1.onnx", 64, 10),
        ("age-gender/gender-v1.onnx", 32, 0),
    ] {
        let onnx = OnnxFile::read(&models_dir().join(file)).expect("reads");
        let shape = [2, 3, size, size];
        let swapped = |chosen| {
            let mut model = onnx.typed_model(&shape).expect("loads");
            kernels::substitute(&mut model, chosen).expect("swaps")
        };
        assert_eq!(swapped(Choice::OURS) - swapped(shallow), deep, "{file}");

        // Two faces: the astronaut's photo and its mirror image.
        let photo = imageops::resize(&astronaut(), size as u32, size as u32, imageops::Triangle);
        let mirrored = imageops::flip_horizontal(&photo);
        let planes = [&photo, &mirrored].into_iter().flat_map(|image| {
            (0..3).flat_map(move |c| image.pixels().map(move |p| p.0[c] as f32 / 255.0))
        });
        let input = tract_ndarray::Array4::from_shape_vec(shape, planes.collect()).expect("fits");
        let input: Tensor = input.into();
        let run = |plan: &onnx::Plan| onnx::run(plan, input.clone()).expect("runs");
        let tracts = run(&onnx.tract_plan(&shape).expect("plans"));
        // Every SIMD level this CPU runs, each with a plan made at it (the
        // deep convolutions pack their weights for the level's tiles).
        for level in Level::available() {
            let ours = simd::with_level(level, || {
                run(&onnx.plan_with(&shape, Choice::OURS).expect("plans"))
            });
            assert_outputs_close(&ours, &tracts, &format!("{file} at {level}"));
        }
    }
}

#[test]
fn the_layer_profile_accounts_for_every_node_by_op() {
    use lambdex_functions::kernels::Choice;
    use lambdex_functions::onnx::{self, OnnxFile};
    use tract_onnx::prelude::*;

    let onnx = OnnxFile::read(&models_dir().join(models::BLAZEFACE_FRONT)).expect("reads");
    let shape = [1, 128, 128, 3];
    let plan = onnx.plan_with(&shape, Choice::OURS).expect("plans");
    let input = Tensor::zero::<f32>(&shape).expect("a tensor");
    let times = onnx::profile(&plan, &input, 3).expect("profiles");

    let nodes: usize = times.iter().map(|time| time.nodes).sum();
    assert_eq!(nodes, plan.model().nodes().len());
    let nodes_of = |op: &str| {
        times
            .iter()
            .find(|time| time.op == op)
            .map_or(0, |time| time.nodes)
    };
    // The swaps the test above counts, by name.
    assert_eq!(nodes_of("lambdex.ResidualBlock"), 5);
    assert_eq!(nodes_of("lambdex.Depthwise3x3S1"), 8);
    assert_eq!(nodes_of("lambdex.Depthwise3x3S2"), 3);
    assert_eq!(nodes_of("lambdex.MaxPool2x2S2"), 3);
    assert_eq!(nodes_of("lambdex.AddRelu"), 11);
    assert!(times.windows(2).all(|pair| pair[0].mean >= pair[1].mean));
    assert!(times[0].mean > std::time::Duration::ZERO);
}
