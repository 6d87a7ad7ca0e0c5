//! The face-crop stage: an image's faces from the face-crop function, in a
//! call shared with other jobs' images within the batch window
//! ([`crate::pipeline::batcher`]). The function answers every image of a call on its
//! own, so an image it cannot crop fails its own job only.

use std::sync::Arc;

use lambdex_proto::{
    Base64Text, FaceCropBatchRequest, FaceCropBatchResponse, FaceCropRequest, FaceCropResponse,
    ImageResult,
};

use crate::config::{BATCH_MAX_REQUEST_BYTES, FunctionConfig};
use crate::lambda::caller::{Answer, Caller};
use crate::lambda::invoke::InvokeError;
use crate::pipeline::batcher::{Batched, Batcher, Limits, call_alone, cut};
use crate::pipeline::billing::Meter;

/// A face-crop batch: images, each answered on its own.
#[derive(Debug)]
pub struct CropBatch;

impl Batched for CropBatch {
    type Item = FaceCropRequest<Base64Text>;
    type Request = FaceCropBatchRequest<Base64Text>;
    type Response = FaceCropBatchResponse<Base64Text>;
    type Part = Vec<ImageResult<Base64Text>>;

    fn bytes(image: &FaceCropRequest<Base64Text>) -> usize {
        image.image.as_str().len()
    }

    fn request(images: Vec<FaceCropRequest<Base64Text>>) -> FaceCropBatchRequest<Base64Text> {
        FaceCropBatchRequest { images }
    }

    fn split(
        response: FaceCropBatchResponse<Base64Text>,
        sizes: &[usize],
    ) -> Result<Vec<Self::Part>, String> {
        let got = response.results.len();
        cut(response.results, sizes)
            .ok_or_else(|| format!("{got} results for {} images", sizes.iter().sum::<usize>()))
    }
}

/// The face-crop function as the pipeline calls it.
#[derive(Debug)]
pub struct FaceCrop {
    pub caller: Arc<Caller>,
    /// None when every image goes alone (a batch of one, or no window).
    batcher: Option<Batcher<CropBatch>>,
}

impl FaceCrop {
    pub fn new(caller: Caller, config: &FunctionConfig) -> Self {
        let caller = Arc::new(caller);
        let limits = Limits {
            items: config.crop_batch_size(),
            bytes: BATCH_MAX_REQUEST_BYTES,
            window: config.batch_window(),
        };
        let shared = limits.items > 1 && !limits.window.is_zero();
        Self {
            batcher: shared.then(|| Batcher::new(Arc::clone(&caller), limits)),
            caller,
        }
    }

    /// The faces of `image` (base64); this job's share of the call goes to
    /// `meter`. An image the function could not crop fails with the error
    /// it reported for it.
    pub async fn crop(
        &self,
        image: Base64Text,
        meter: &Meter,
    ) -> Result<Answer<FaceCropResponse<Base64Text>>, InvokeError> {
        let images = vec![FaceCropRequest { image }];
        let answer = match &self.batcher {
            Some(batcher) => batcher.submit(images, meter).await,
            None => call_alone::<CropBatch>(&self.caller, images, meter).await,
        }?;
        let Answer {
            response,
            function,
            function_version,
        } = answer;
        match response.into_iter().next() {
            Some(ImageResult::Cropped(response)) => Ok(Answer {
                response,
                function,
                function_version,
            }),
            Some(ImageResult::Failed(failure)) => Err(InvokeError::Function {
                function,
                error_type: failure.error_type,
                message: failure.error_message,
            }),
            None => Err(InvokeError::BadAnswer {
                function,
                reason: "no result for the image".to_owned(),
            }),
        }
    }
}
