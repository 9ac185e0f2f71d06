/** cordon's version, kept in step with package.json by a test. */
export const CORDON_VERSION = '0.1.0';
