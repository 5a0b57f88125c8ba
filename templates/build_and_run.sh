#!/usr/bin/env bash
# Build the feed-check Flex Template and run it on Dataflow.
#
#   PROJECT=my-project REGION=us-central1 BUCKET=my-bucket templates/build_and_run.sh image
#   ... templates/build_and_run.sh template
#   ... templates/build_and_run.sh batch  'gs://my-bucket/captures/*.gz' gs://my-bucket/out/run1
#   ... templates/build_and_run.sh streaming projects/my-project/subscriptions/deltas gs://my-bucket/out/live
#
# Environment: PROJECT, REGION, BUCKET (required); REPOSITORY (Artifact Registry Docker repository,
# default feedcheck, created beforehand with `gcloud artifacts repositories create`); TAG (image
# tag, default latest); PRINT=1 prints the commands instead of running them.
# One template serves both modes: a job given input_subscription streams (templates/main.py).
# Extra template parameters: PARAMS='small_gap_max=5,stall_timeout=60' (gcloud's --parameters
# syntax; for a value with commas, such as several input globs, use '^~^input=a,b~output=...').
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
REPOSITORY=${REPOSITORY:-feedcheck}
TAG=${TAG:-latest}
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/feedcheck-launcher:${TAG}"
TEMPLATE="gs://${BUCKET}/templates/feedcheck.json"

run() {
  if [[ "${PRINT:-}" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

launch() {  # launch JOB_PREFIX PARAMETERS...
  local job="$1-$(date -u +%Y%m%d-%H%M%S)"
  shift
  run gcloud dataflow flex-template run "$job" \
    --project="$PROJECT" --region="$REGION" \
    --template-file-gcs-location="$TEMPLATE" \
    --temp-location="gs://${BUCKET}/tmp" --staging-location="gs://${BUCKET}/staging" \
    "$@" ${PARAMS:+--parameters="$PARAMS"}
}

case "${1:-}" in
  image)     # build templates/Dockerfile on Cloud Build and push it to Artifact Registry
    run gcloud builds submit --project="$PROJECT" --region="$REGION" \
      --config=templates/cloudbuild.yaml --substitutions="_IMAGE=${IMAGE}" .
    ;;
  template)  # write the template spec (image + metadata) to Cloud Storage
    run gcloud dataflow flex-template build "$TEMPLATE" \
      --project="$PROJECT" --image="$IMAGE" --sdk-language=PYTHON \
      --metadata-file=templates/metadata.json
    ;;
  batch)     # batch INPUT_GLOB OUTPUT_FOLDER
    launch feedcheck-batch --parameters="input=${2:?input glob},output=${3:?output folder}"
    ;;
  streaming) # streaming SUBSCRIPTION OUTPUT_FOLDER (Streaming Engine is on by default in Beam 2.75)
    launch feedcheck-streaming \
      --parameters="input_subscription=${2:?subscription},output=${3:?output folder}"
    ;;
  *)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
