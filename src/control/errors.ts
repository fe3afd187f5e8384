/**
 * A mistake of the user's (a bad option, an unknown port, a path in a
 * missing directory): the CLI prints its message as one line, without a
 * stack, and the control API answers it with status 400/404/409.
 *
 * @module
 */

/** A user's mistake; the message says what was wrong and what to do. */
export class UserError extends Error {
  /** HTTP status for the control API. */
  readonly status: number;

  constructor(message: string, options: ErrorOptions & { status?: number } = {}) {
    super(message, options);
    this.name = "UserError";
    this.status = options.status ?? (/^No port named/.test(message) ? 404 : 400);
  }
}
