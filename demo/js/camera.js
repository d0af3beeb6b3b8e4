// Camera access: list the cameras, open one at the first resolution that really works.

// Landscape constraints, as cameras report them; a portrait device swaps them itself.
export const RESOLUTIONS = [
  { width: 1280, height: 720 },
  { width: 640, height: 480 },
];

const METADATA_TIMEOUT_MS = 10000;
// Android labels cameras "camera2 0, facing back"; iOS "Back Camera", "Back Ultra Wide Camera".
const REAR_LABEL = /\b(back|rear|environment|world)\b/i;
const FRONT_LABEL = /\b(front|user|facetime|selfie)\b/i;

/** An error whose message is meant for the page, in plain words. */
export class CameraError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'CameraError';
    this.kind = kind;
  }
}

function explain(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return new CameraError('denied', 'Camera permission was denied. Allow camera access for this page and reload.');
    case 'NotFoundError':
    case 'DevicesNotFoundError':
      return new CameraError('absent', 'No camera was found. Connect a camera and reload.');
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return new CameraError('busy', 'The camera is busy or could not be started. Close other apps using it and try again.');
    default:
      return new CameraError('unknown', `The camera could not be opened (${err && err.name ? err.name : err}).`);
  }
}

/** Video input devices with labels (asks for permission once so that labels are filled). */
export async function listCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new CameraError('unsupported', 'This browser gives no camera access (it needs HTTPS or localhost).');
  }
  let probe;
  try {
    probe = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (err) {
    throw explain(err);
  } finally {
    if (probe) probe.getTracks().forEach((t) => t.stop());
  }
  const devices = await navigator.mediaDevices.enumerateDevices();
  const cams = devices.filter((d) => d.kind === 'videoinput');
  if (cams.length === 0) throw new CameraError('absent', 'No camera was found. Connect a camera and reload.');
  return cams.map((d, i) => ({ deviceId: d.deviceId, label: d.label || `Camera ${i + 1}`, facing: facingOf(d) }));
}

/** 'environment', 'user' or '' from the device's capabilities (Chromium) or its label (others). */
function facingOf(device) {
  let modes = [];
  try {
    modes = (device.getCapabilities && device.getCapabilities().facingMode) || [];
  } catch (err) {
    modes = []; // getCapabilities throws on some browsers before permission: the label decides
  }
  if (modes.includes('environment')) return 'environment';
  if (modes.includes('user')) return 'user';
  if (REAR_LABEL.test(device.label)) return 'environment';
  if (FRONT_LABEL.test(device.label)) return 'user';
  return '';
}

/**
 * The camera to preselect: the one chosen last time (its deviceId, when still listed), else the
 * first rear camera (a phone's main camera, pointing at the card), else the first listed.
 * cams: [{deviceId, label, facing}]. Returns a deviceId, or '' for an empty list.
 */
export function pickCamera(cams, rememberedId) {
  if (cams.length === 0) return '';
  if (rememberedId && cams.some((c) => c.deviceId === rememberedId)) return rememberedId;
  const rear = cams.find((c) => c.facing === 'environment');
  return (rear || cams[0]).deviceId;
}

/**
 * Open `deviceId` at 1280x720, else 640x480, with exact constraints (so an unmet size fails
 * instead of being silently replaced). Resolves once the video has its dimensions.
 * @returns {Promise<{stream: MediaStream, width: number, height: number, requested: object}>}
 */
export async function openCamera(video, deviceId) {
  let lastError = null;
  for (const res of RESOLUTIONS) {
    const constraints = {
      audio: false,
      video: {
        deviceId: deviceId ? { exact: deviceId } : undefined,
        width: { exact: res.width },
        height: { exact: res.height },
      },
    };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      if (err && (err.name === 'OverconstrainedError' || err.name === 'ConstraintNotSatisfiedError')) {
        lastError = err;
        continue; // this resolution is not offered: try the next one
      }
      throw explain(err);
    }
    try {
      video.srcObject = stream;
      await new Promise((resolve, reject) => {
        if (video.readyState >= 1 && video.videoWidth > 0) { resolve(); return; }
        const timer = setTimeout(() => reject(new CameraError('unknown', 'The camera sent no video.')), METADATA_TIMEOUT_MS);
        video.addEventListener('loadedmetadata', () => { clearTimeout(timer); resolve(); }, { once: true });
        video.addEventListener('error', () => {
          clearTimeout(timer);
          reject(new CameraError('unknown', 'The camera stream failed to start.'));
        }, { once: true });
      });
      await video.play();
    } catch (err) {
      stopStream(stream); // never leave a camera running that nobody holds
      video.srcObject = null;
      throw err instanceof CameraError ? err : explain(err);
    }
    // Read the size after loadedmetadata: a portrait device reports it swapped.
    return { stream, width: video.videoWidth, height: video.videoHeight, requested: res };
  }
  const tried = RESOLUTIONS.map((r) => `${r.width}x${r.height}`).join(', ');
  throw new CameraError('resolution', `The camera supports none of the resolutions this app needs (${tried}).`
    + (lastError && lastError.constraint ? ` Unmet constraint: ${lastError.constraint}.` : ''));
}

export function stopStream(stream) {
  if (stream) stream.getTracks().forEach((t) => t.stop());
}
