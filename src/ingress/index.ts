/**
 * ingress/: temporary authenticated tunnels into a sandbox. Not built yet.
 */
export {};
