"""Human review in Label Studio: the review queue goes out as tasks, the verdicts come back as a feedback batch.

- `queue`: a folder of generated images with their products and metadata (RF1M's layout without labels;
  recurrent generation writes one) becomes tasks, RFNet's verdicts as pre-annotations, in a chosen order;
- `pull`: finished tasks become a feedback batch in the RF1M layout that `reliable_ad.data.feedback.ingest`
  takes like any other; a second pull writes only tasks whose annotations are new or changed;
- `agreement`: judge vs human and annotator vs annotator, per pulled batch;
- `annotator`: the embedded world's reviewer answering tasks through the API;
- `client` talks to the server, `server` starts a throwaway one (tests, benchmarks, the embedded path).
"""
