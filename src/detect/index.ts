/**
 * detect/: per-agent behaviour baselines learned from the audit stream, and
 * alerts when an agent departs from them (novelty, rate, volume).
 *
 * @example
 * const d = createDetector({ options: { learnEvents: 2000, mode: 'freeze' } });
 * for (const e of events) for (const a of d.observe(e)) console.log(a.kind, a.feature, a.value, a.score);
 */
export { features, commandKey, pathKey, areaOf, siteOf, suffixOf, CATEGORY_FEATURES, AMOUNT_FEATURES, type DetectEvent, type Features, type Category, type CategoryFeature, type AmountFeature } from './features.js';
export { emptyBaseline, median, mad, robustZ, transform, newValueChance, summariseBaseline, type BaselineState, type RateProfile } from './baseline.js';
export { detectOptionsSchema, parseDetectOptions, thresholdFor, FEATURE_THRESHOLDS, UPLOAD_FEATURE, ALERT_ACTIONS, type AlertAction, type DetectOptions, type DetectOptionsInput } from './options.js';
export { createDetector, type Alert, type AlertKind, type Detector, type DetectorOptions, type DetectorStats, type Score, type Unjudged, type UnjudgedReason } from './detector.js';
export { openDetectStore, type DetectStore, type StoredAlert, type AlertFilter } from './store.js';
export { createDetectService, alertEvent, type DetectService, type DetectServiceOptions } from './service.js';
export { sensitiveClassOf, homeRelative } from './sensitive.js';
export { createAlertWebhook, alertText, type AlertWebhook, type AlertWebhookOptions } from './notify.js';
