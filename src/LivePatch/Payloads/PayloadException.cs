namespace LivePatch.Payloads;

/// <summary>
/// The one exception for a payload that cannot be loaded or linked: malformed ELF, bad records,
/// unknown symbols, unsupported relocations. The message is one line naming the payload file, what is wrong and where.
/// </summary>
public sealed class PayloadException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception for the payload file <paramref name="payloadFile"/>; the message becomes <c>payload FILE: reason</c>.</summary>
    public PayloadException(string payloadFile, string reason, Exception? innerException = null)
        : base($"payload {payloadFile}: {reason}", innerException)
    {
        PayloadFile = payloadFile;
        Reason = reason;
    }

    /// <summary>The payload file as it was named when loaded.</summary>
    public string PayloadFile { get; }

    /// <summary>What is wrong and where, without the payload file name.</summary>
    public string Reason { get; }
}
