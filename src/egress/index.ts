/**
 * egress/: the default-deny egress proxy, one door per sandbox (DNS and IP
 * checks, SNI checks, TLS interception). Not built yet: see the egress issue.
 */
export {};
