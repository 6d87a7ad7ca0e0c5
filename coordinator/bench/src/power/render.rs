//! The power bench's report as Markdown: a table per function, the
//! pipeline per 8M images, and lambdex beside the reference figures.

use std::fmt::Write as _;

use comfy_table::{Table, presets::ASCII_MARKDOWN};

use super::summary::{MODEL_TARGET_USD, PIPELINE_TARGET_USD};
use super::{Batching, Function, PowerReport};

fn usd(value: f64) -> String {
    if value >= 100.0 {
        format!("${value:.0}")
    } else if value >= 0.01 {
        format!("${value:.2}")
    } else {
        format!("${value:.3e}")
    }
}

fn met(value: f64, target: f64) -> &'static str {
    if value <= target { "met" } else { "not met" }
}

fn markdown_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header(header);
    table
}

/// The whole report.
pub fn markdown(report: &PowerReport) -> String {
    let mut out = String::new();
    let prices = &report.prices;
    let images: Vec<String> = report
        .images
        .iter()
        .map(|i| format!("{} ({} face(s))", i.name, i.faces))
        .collect();
    let _ = writeln!(out, "# lambdex bench power — {}\n", report.generated_at);
    let _ = writeln!(
        out,
        "Host: {}. Durations, and so costs, are this CPU's: Lambda's own hosts may be quicker or slower.\n",
        report.host
    );
    let _ = writeln!(
        out,
        "Each memory size: {} new instance(s) (the first call of each is a cold start), one unmeasured call with each other photo, then {} measured calls cycling through {}. \
         CPU limited to memory/1769 of a core by the local Lambda's cgroups; durations and billed durations from the REPORT lines.\n",
        report.cold_starts,
        report.invocations,
        images.join(", ")
    );
    let _ = writeln!(
        out,
        "Face-crop gets the photos {} ({:.0} a call), the classifiers their crops {} ({:.2} faces a call); `--batching` chooses.\n",
        match report.batching {
            Batching::Shared => "in a full batch",
            Batching::PerImage => "one by one",
        },
        report.images_per_crop_call,
        match report.batching {
            Batching::Shared =>
                "in full batches shared across images, as the batch window sends them on a busy queue",
            Batching::PerImage => "image by image, each image's crops in calls of their own",
        },
        report.faces_per_classifier_call
    );
    let _ = writeln!(
        out,
        "Prices: x86 ${}/GB-s, arm64 ${}/GB-s, ${} per 1M requests ({}). \
         The arm64 figures price the durations measured here on x86_64: arm64 itself was not measured.\n",
        prices.x86_usd_per_gb_second,
        prices.arm64_usd_per_gb_second,
        prices.usd_per_million_requests,
        prices.source
    );
    let rate = report.cold_start_rate * 100.0;
    for function in &report.functions {
        let _ = writeln!(out, "## {}\n", function.function);
        let mut table = markdown_table(vec![
            "memory MB",
            "p50 ms",
            "p95 ms",
            "billed p50 ms",
            "max used MB",
            "x86 $/call",
            "x86 $/1M",
            "x86 $/8M",
            "arm64 $/8M",
            "init p50 ms",
            "cold billed ms",
            "cold share",
        ]);
        for size in &function.sizes {
            let (init, cold_billed, share) = size.cold.as_ref().map_or_else(
                || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
                |cold| {
                    (
                        format!("{:.1}", cold.init_p50_ms),
                        format!("{:.0}", cold.billed_p50_ms),
                        format!("{:.2} %", cold.cost_share * 100.0),
                    )
                },
            );
            let memory = if size.fits {
                size.memory_mb.to_string()
            } else {
                format!("{} (out of memory)", size.memory_mb)
            };
            table.add_row(vec![
                memory,
                format!("{:.1}", size.p50_ms),
                format!("{:.1}", size.p95_ms),
                format!("{:.0}", size.billed_p50_ms),
                size.max_memory_used_mb.to_string(),
                usd(size.x86.per_call_usd),
                usd(size.x86.per_million_usd),
                usd(size.x86.per_8m_usd),
                usd(size.arm64.per_8m_usd),
                init,
                cold_billed,
                share,
            ]);
        }
        let _ = writeln!(out, "{table}\n");
        match function.best() {
            Some(best) => {
                let _ = write!(
                    out,
                    "Best: {} MB, {} per 8M calls on x86 ({} on arm64). ",
                    best.memory_mb,
                    usd(best.x86.per_8m_usd),
                    usd(best.arm64.per_8m_usd),
                );
                if function.function == Function::FaceCrop.name() {
                    let images = report.images_per_crop_call.max(1.0);
                    let per_image = best.x86.per_8m_usd / images;
                    let faces = report.faces_per_crop_call;
                    let _ = write!(
                        out,
                        "The calls carried {images:.0} image(s) each: {} per 8M images. \
                         Target ≤ {} per 8M predictions, counting an image each: {}. ",
                        usd(per_image),
                        usd(MODEL_TARGET_USD),
                        met(per_image, MODEL_TARGET_USD)
                    );
                    // Each face found is a prediction the classifiers make.
                    if faces > 0.0 {
                        let per_face = best.x86.per_8m_usd / faces;
                        let _ = write!(
                            out,
                            "They showed {faces:.2} faces a call: {} per 8M faces; \
                             counting a face each: {}. ",
                            usd(per_face),
                            met(per_face, MODEL_TARGET_USD)
                        );
                    }
                } else {
                    let faces = report.faces_per_classifier_call.max(1.0);
                    let per_face = best.x86.per_8m_usd / faces;
                    let _ = write!(
                        out,
                        "The calls carried {faces:.2} faces each ({} batching): {} per 8M faces. \
                         Target ≤ {} per 8M predictions (a face each): {}. ",
                        report.batching.name(),
                        usd(per_face),
                        usd(MODEL_TARGET_USD),
                        met(per_face, MODEL_TARGET_USD)
                    );
                }
                let _ = writeln!(
                    out,
                    "Cold share: what cold starts add at a {rate} % cold-start rate.\n"
                );
            }
            None => {
                let _ = writeln!(out, "Best: none — no size measured fits in its memory.\n");
            }
        }
    }

    let _ = writeln!(out, "## The pipeline per 8M images\n");
    match &report.pipeline {
        Some(pipeline) => {
            let mut table = markdown_table(vec![
                "function",
                "memory MB",
                "calls per image",
                "x86 $/8M images",
                "arm64 $/8M images",
            ]);
            for part in &pipeline.parts {
                table.add_row(vec![
                    part.function.clone(),
                    part.memory_mb.to_string(),
                    format!("{:.2}", part.calls_per_image),
                    usd(part.x86_per_8m_usd),
                    usd(part.arm64_per_8m_usd),
                ]);
            }
            table.add_row(vec![
                "whole pipeline".to_owned(),
                String::new(),
                String::new(),
                usd(pipeline.x86_per_8m_usd),
                usd(pipeline.arm64_per_8m_usd),
            ]);
            let _ = writeln!(out, "{table}\n");
            let _ = writeln!(
                out,
                "Target ≤ {} per 8M images: {}. Calls per image, over the photos measured: {}; \
                 an image without faces would cost face-crop alone.\n",
                usd(PIPELINE_TARGET_USD),
                met(pipeline.x86_per_8m_usd, PIPELINE_TARGET_USD),
                match report.batching {
                    Batching::Shared =>
                        "face-crop gets 1 / its batch size calls and a model faces / its batch size, images \
                         sharing full batches (the batch window on a queue busy enough to fill them)",
                    Batching::PerImage =>
                        "face-crop gets one call and a model ceil(faces / batch size), each image alone",
                }
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Not priced: it needs face-crop and every model measured (`--function face-crop,age,gender`) with a size that fits.\n"
            );
        }
    }

    let _ = writeln!(out, "## Compared\n");
    let mut table = markdown_table(vec!["what", "USD per 8M", "as quoted", "source"]);
    for function in &report.functions {
        if let Some(best) = function.best() {
            table.add_row(vec![
                format!(
                    "lambdex {} at {} MB (x86), per 8M calls",
                    function.function, best.memory_mb
                ),
                usd(best.x86.per_8m_usd),
                "measured".to_owned(),
                "this run".to_owned(),
            ]);
        }
    }
    if let Some(pipeline) = &report.pipeline {
        table.add_row(vec![
            "lambdex whole pipeline (x86), per 8M images".to_owned(),
            usd(pipeline.x86_per_8m_usd),
            "measured".to_owned(),
            "this run".to_owned(),
        ]);
    }
    for figure in &report.reference {
        table.add_row(vec![
            figure.name.clone(),
            usd(figure.usd_per_volume()),
            format!("{} {}", usd(figure.usd), figure.unit),
            figure.source.clone(),
        ]);
    }
    let _ = writeln!(out, "{table}");
    out
}
