"""The contracts between data_prep (writer) and the input pipeline (reader).

Frame example (one record per frame, ArrayRecord via a TFDS builder):
  image       uint8 [H, W, 1]   zlib-compressed tensor feature
  video_id    str               unique clip id
  patient_id  str               equals video_id when unknown
  frame_idx   int32             index of the frame in the original video
  n_frames    int32             frames of this clip in the dataset
  timestamp   float32           seconds from the start of the original video
  probe       str               convex | linear | unknown
  label       int32             index into the dataset's class names, -1 unlabeled
  label_name  str               "" when unlabeled
  <finding>   int8              one per name in FINDINGS: -1 unknown, 0, 1

Records of a split are written in (clip, frame) order (the builder disables
TFDS's write-time shuffling), so a split is a run of clips, each a contiguous
block of frames. The dataset-level JSON (`lusjax.layout.DATASET_JSON`, beside the TFDS
folders) lists, per split, the clips in that order with their frame counts;
readers rebuild the clip index from it without decoding any image.

Training batch (host side, produced by the grain pipeline):
  view1, view2  uint8 [B, H, W, C]  two frames / views forming positive pairs
  label         int32 [B]          clip label of the anchor, -1 unlabeled
  index         int32 [B]          record index of view1 (for batch hashing)
Augmentation happens on the device, inside the jitted step, from these.
"""

FINDINGS = ("b_lines", "a_lines", "effusion", "consolidation", "pleural_irregular")

BATCH_KEYS = ("view1", "view2", "label", "index")
