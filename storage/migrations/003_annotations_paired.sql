-- Paired (A/B comparison) annotations are first-class rows of `annotations`: the annotator says
-- which of two images has the better quality, not a verdict, so their `verdict` stays NULL.
-- better:     'A' | 'B' for lane 'paired' (NULL for the single-image lanes)
-- image_b_id: the second image of the pair (`image_id` is image A); NULL for single-image lanes.
ALTER TABLE annotations ADD COLUMN better VARCHAR;
ALTER TABLE annotations ADD COLUMN image_b_id VARCHAR;
