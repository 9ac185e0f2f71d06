/**
 * dashboard/: the operator web UI served by `cordon up`. Not built yet.
 */
export {};
