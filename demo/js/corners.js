// The corner model's answer as the app uses it (no DOM): a card or none, its corners in
// pixel-index coordinates of the 480x640 model input, and the text of data-points.

// The model card's threshold (train/exported_models/README.md): below it there is no card and
// the corners mean nothing.
export const SCORE_THRESHOLD = 0.25;

/**
 * The `corners` output (float32 [1, 4, 2], continuous pixel coordinates: the image spans 0..480)
 * -> pixel-index coordinates (the centre of the top-left pixel is (0, 0)) written into out
 * (8 values, TL, TR, BR, BL). Returns false (out untouched) when score < SCORE_THRESHOLD or a
 * value is not finite.
 */
export function readCorners(corners, score, out) {
  if (!(score >= SCORE_THRESHOLD)) return false;
  for (let i = 0; i < 8; i += 1) if (!Number.isFinite(corners[i])) return false;
  for (let i = 0; i < 8; i += 1) out[i] = corners[i] - 0.5;
  return true;
}

/** "x,y x,y x,y x,y" with one decimal (TL, TR, BR, BL), or "" for no points. */
export function formatPoints(points) {
  if (!points) return '';
  const parts = [];
  for (let i = 0; i < 8; i += 2) parts.push(`${points[i].toFixed(1)},${points[i + 1].toFixed(1)}`);
  return parts.join(' ');
}
