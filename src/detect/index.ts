/**
 * detect/: behaviour baselines and anomaly alerts from the audit stream. Not built yet.
 */
export {};
