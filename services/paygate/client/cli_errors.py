"""What `paygate` says when a command fails for want of an answer: one place for every command.

A call that got no answer from the gateway ends in a status made by the client's own
channel (UNAVAILABLE or DEADLINE_EXCEEDED, with no google.rpc.ErrorInfo). Every command
reports it the same way: the gateway's address, what this means for what the command was
doing (a command says so with `consequence`), and what to do.

A payment's own failures (a bank away) come with an ErrorInfo from the gateway: see
`payment_failure_message`, which says what is known of the payment.

A refusal the gateway explained is said in its words, with its reason at the end, unless
`REFUSALS` has the words of `paygate` for that reason (what to type or run instead).
"""

from __future__ import annotations

from paygate.client.delivery import maybe_delivered
from paygate.common.rpc_errors import from_channel
from paygate.errors import (
    INVALID_ONE_TIME_CODE,
    MFA_REQUIRED,
    OUTCOME_FAILED,
    OUTCOME_KEY,
    PAYMENT_ID_KEY,
    TOTP_ALREADY_ENABLED,
    TOTP_KEY_MISMATCH,
    TOTP_NOT_ENABLED,
    TOTP_NOT_ENROLLED,
    PaygateError,
    Unavailable,
)

GATEWAY_ENV = "PAYGATE_GATEWAY"
CA_CERT_ENV = "PAYGATE_CA_CERT"


class CliError(Exception):
    """A failure to report to the user as `error: <message>`, exit status 1."""


# What `paygate` says of a refusal with this reason, in place of the gateway's words.
REFUSALS: dict[str, str] = {
    MFA_REQUIRED: (
        "this account has two-factor login on: give the code of your authenticator app"
        " with --code CODE (or a recovery code)"
    ),
    INVALID_ONE_TIME_CODE: (
        "the one-time code is wrong or was used already: type the code your app shows now"
        " (each code works once), or an unused recovery code"
    ),
    TOTP_ALREADY_ENABLED: (
        "two-factor login is already on: `paygate mfa disable` turns it off,"
        " `paygate mfa recovery-codes` makes new recovery codes"
    ),
    TOTP_NOT_ENABLED: "two-factor login is off: `paygate mfa enable` turns it on",
    TOTP_NOT_ENROLLED: "no key to confirm: `paygate mfa enable` makes one",
    TOTP_KEY_MISMATCH: (
        "the gateway cannot read two-factor keys (its key file is not the one they were"
        " sealed with): tell its operator"
    ),
}


def refusal_message(error: PaygateError) -> str:
    """`error: ... [REASON]`, the line `paygate` prints for a refusal of the gateway."""
    return f"error: {REFUSALS.get(error.reason, error.message)} [{error.reason}]"


def no_answer_message(
    error: PaygateError, target: str, *, timeout_s: float, consequence: str = "", hint: str = ""
) -> str:
    """The lines `paygate` prints for a call the gateway at `target` did not answer:
    `consequence` says what that means for the command, `hint` what else it can do."""
    means = f": {consequence}" if consequence else ""
    if error.reason == "DEADLINE_EXCEEDED":
        return (
            f"error: the gateway at {target} did not answer within {timeout_s:g} s"
            f" [DEADLINE_EXCEEDED]\nit may be overloaded, or the network cut off: try again,"
            " or allow longer with --timeout"
        )
    if maybe_delivered(error):
        return (
            f"error: the connection to the gateway at {target} broke during the call"
            f" [{error.reason}]\n({error.message}): try again"
        )
    advice = _what_to_do(error.message) + (f" {hint}" if hint else "")
    return f"error: the gateway at {target} could not be reached{means} [{error.reason}]\n{advice}"


def _what_to_do(detail: str) -> str:
    lowered = detail.lower()
    if "handshake" in lowered or "certificate" in lowered or "ssl" in lowered:
        return (
            f"it refused the TLS handshake: is --ca-cert (env {CA_CERT_ENV}) the CA that"
            f" signed its certificate? ({detail})"
        )
    if "resolv" in lowered or "dns" in lowered:
        return f"that name does not resolve: check --gateway (env {GATEWAY_ENV}) ({detail})"
    cause = "nothing listens there" if "connection refused" in lowered else detail
    return (
        f"{cause}. Is the gateway running? `make run` in the repository starts one;"
        f" --gateway (env {GATEWAY_ENV}) names another."
    )


def payment_failure_message(error: Unavailable, key: str) -> str:
    """What `paygate pay` says, beside the error, of a payment that did not complete."""
    if error.metadata.get(OUTCOME_KEY) == OUTCOME_FAILED:
        # The gateway decided: aborted at every bank, nothing moved, the key released.
        paid = error.metadata.get(PAYMENT_ID_KEY, "")
        named = f"payment {paid}" if paid else "the payment"
        return (
            f"{named} FAILED: nothing was paid, and nothing will be. Its key was released:"
            " paying again makes a new payment."
        )
    if from_channel(error) and not maybe_delivered(error):
        return ""  # never sent: no_answer_message says it all
    return (
        "the payment did not complete now; it may still go through. Retry with"
        f" --idempotency-key {key}: the retry answers it if it went through, or makes it,"
        " once"
    )
