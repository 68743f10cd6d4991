using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace LivePatch.Elf;

/// <summary>Reads a word of the memory an expression runs against (a stopped thread's); false when it cannot.</summary>
internal interface IWordReader
{
    /// <summary>Reads the 8 bytes at <paramref name="address"/>.</summary>
    bool TryReadWord(ulong address, out ulong value);
}

/// <summary>
/// The DWARF expressions call-frame information uses (DWARF 5, 2.5): a stack machine over 64-bit values, with the
/// registers of the frame and memory. Enough for glibc's signal trampoline (<c>__restore_rt</c>, whose rules read
/// the interrupted registers from the <c>ucontext</c> on the stack) and the PLT's CFA, <c>rsp + 8 + ((rip &amp; 15)
/// &gt;= 11) * 8</c>. An operation it does not know, a register it is not given, a failed read, a stack under- or
/// overflow: false, never a guess.
/// </summary>
internal static class DwarfExpression
{
    private const int MaxStack = 64;
    private const int MaxSteps = 1000;

    /// <summary>
    /// Evaluates <paramref name="expression"/> with <paramref name="registers"/> (DWARF numbers 0-16; bit n of
    /// <paramref name="known"/> set when register n's value is known), <paramref name="initial"/> pushed first when
    /// given (the CFA, for register rules). The result is the value on top of the stack.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool TryEvaluate(ReadOnlySpan<byte> expression, ReadOnlySpan<ulong> registers, uint known, IWordReader memory, ulong? initial, out ulong result)
    {
        result = 0;
        Span<ulong> stack = stackalloc ulong[MaxStack];
        var top = 0;
        if (initial is { } value)
            stack[top++] = value;
        var position = 0;
        for (var steps = 0; position < expression.Length; steps++)
        {
            if (steps == MaxSteps)
                return false; // a loop (DW_OP_skip, bra) that does not end
            var op = expression[position++];
            if (op is >= 0x30 and <= 0x4f) // DW_OP_lit0..31
            {
                if (!Push(stack, ref top, (ulong)(op - 0x30)))
                    return false;
                continue;
            }
            if (op is >= 0x70 and <= 0x8f) // DW_OP_breg0..31
            {
                if (!Register(op - 0x70, registers, known, out var register) || !ElfInternal.Leb128.TryReadSigned(expression, ref position, out var offset)
                    || !Push(stack, ref top, register + (ulong)offset))
                    return false;
                continue;
            }
            ulong a, b;
            switch (op)
            {
                case 0x03: // DW_OP_addr
                    if (!Fixed(expression, ref position, 8, out a) || !Push(stack, ref top, a))
                        return false;
                    break;
                case 0x06: // DW_OP_deref
                    if (!Pop(stack, ref top, out a) || !memory.TryReadWord(a, out b) || !Push(stack, ref top, b))
                        return false;
                    break;
                case 0x08: case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x0e: case 0x0f: // DW_OP_const1u..8s
                    {
                        var size = 1 << ((op - 0x08) >> 1);
                        if (!Fixed(expression, ref position, size, out a))
                            return false;
                        if ((op & 1) == 1 && size < 8) // signed: extend
                            a = (ulong)((long)(a << (64 - size * 8)) >> (64 - size * 8));
                        if (!Push(stack, ref top, a))
                            return false;
                        break;
                    }
                case 0x10: // DW_OP_constu
                    if (!ElfInternal.Leb128.TryReadUnsigned(expression, ref position, out a) || !Push(stack, ref top, a))
                        return false;
                    break;
                case 0x11: // DW_OP_consts
                    if (!ElfInternal.Leb128.TryReadSigned(expression, ref position, out var signed) || !Push(stack, ref top, (ulong)signed))
                        return false;
                    break;
                case 0x12: // DW_OP_dup
                    if (top == 0 || !Push(stack, ref top, stack[top - 1]))
                        return false;
                    break;
                case 0x13: // DW_OP_drop
                    if (!Pop(stack, ref top, out _))
                        return false;
                    break;
                case 0x14: // DW_OP_over
                    if (top < 2 || !Push(stack, ref top, stack[top - 2]))
                        return false;
                    break;
                case 0x15: // DW_OP_pick
                    {
                        if (position >= expression.Length)
                            return false;
                        var index = expression[position++];
                        if (index >= top || !Push(stack, ref top, stack[top - 1 - index]))
                            return false;
                        break;
                    }
                case 0x16: // DW_OP_swap
                    if (top < 2)
                        return false;
                    (stack[top - 1], stack[top - 2]) = (stack[top - 2], stack[top - 1]);
                    break;
                case 0x17: // DW_OP_rot
                    if (top < 3)
                        return false;
                    (stack[top - 1], stack[top - 2], stack[top - 3]) = (stack[top - 2], stack[top - 3], stack[top - 1]);
                    break;
                case 0x19: // DW_OP_abs
                    if (!Pop(stack, ref top, out a))
                        return false;
                    Push(stack, ref top, (long)a < 0 ? (ulong)-(long)a : a);
                    break;
                case 0x1f: // DW_OP_neg
                    if (!Pop(stack, ref top, out a))
                        return false;
                    Push(stack, ref top, (ulong)-(long)a);
                    break;
                case 0x20: // DW_OP_not
                    if (!Pop(stack, ref top, out a))
                        return false;
                    Push(stack, ref top, ~a);
                    break;
                case 0x23: // DW_OP_plus_uconst
                    if (!Pop(stack, ref top, out a) || !ElfInternal.Leb128.TryReadUnsigned(expression, ref position, out b))
                        return false;
                    Push(stack, ref top, a + b);
                    break;
                case 0x1a: case 0x1b: case 0x1c: case 0x1d: case 0x1e: case 0x21: case 0x22: case 0x24: case 0x25: case 0x26: case 0x27:
                case 0x29: case 0x2a: case 0x2b: case 0x2c: case 0x2d: case 0x2e:
                    {
                        // Binary operations: b is the top, a the entry below it.
                        if (!Pop(stack, ref top, out b) || !Pop(stack, ref top, out a) || !Binary(op, a, b, out var c))
                            return false;
                        Push(stack, ref top, c);
                        break;
                    }
                case 0x2f: // DW_OP_skip
                case 0x28: // DW_OP_bra
                    {
                        if (position + 2 > expression.Length)
                            return false;
                        var delta = BinaryPrimitives.ReadInt16LittleEndian(expression[position..]);
                        position += 2;
                        var jump = true;
                        if (op == 0x28)
                        {
                            if (!Pop(stack, ref top, out a))
                                return false;
                            jump = a != 0;
                        }
                        if (jump)
                        {
                            position += delta;
                            if (position < 0 || position > expression.Length)
                                return false;
                        }
                        break;
                    }
                case 0x92: // DW_OP_bregx
                    {
                        if (!ElfInternal.Leb128.TryReadUnsigned(expression, ref position, out var number) || number > 31 || !Register((int)number, registers, known, out var register)
                            || !ElfInternal.Leb128.TryReadSigned(expression, ref position, out var offset) || !Push(stack, ref top, register + (ulong)offset))
                            return false;
                        break;
                    }
                case 0x94: // DW_OP_deref_size
                    {
                        if (position >= expression.Length)
                            return false;
                        var size = expression[position++];
                        if (size is 0 or > 8 || !Pop(stack, ref top, out a) || !memory.TryReadWord(a, out b))
                            return false;
                        Push(stack, ref top, size == 8 ? b : b & ((1UL << (size * 8)) - 1));
                        break;
                    }
                case 0x96: // DW_OP_nop
                    break;
                default:
                    return false; // DW_OP_reg* (a location, not a value), call frames, TLS, typed operations: not in CFI we trust
            }
        }
        if (top == 0)
            return false;
        result = stack[top - 1];
        return true;
    }

    private static bool Binary(byte op, ulong a, ulong b, out ulong c)
    {
        c = op switch
        {
            0x1a => a & b,
            0x1b => b == 0 ? 0 : (ulong)((long)a / (long)b),
            0x1c => a - b,
            0x1d => b == 0 ? 0 : a % b,
            0x1e => a * b,
            0x21 => a | b,
            0x22 => a + b,
            0x24 => b >= 64 ? 0 : a << (int)b,
            0x25 => b >= 64 ? 0 : a >> (int)b,
            0x26 => b >= 64 ? ((long)a < 0 ? ulong.MaxValue : 0) : (ulong)((long)a >> (int)b),
            0x27 => a ^ b,
            0x29 => a == b ? 1UL : 0,
            0x2a => (long)a >= (long)b ? 1UL : 0,
            0x2b => (long)a > (long)b ? 1UL : 0,
            0x2c => (long)a <= (long)b ? 1UL : 0,
            0x2d => (long)a < (long)b ? 1UL : 0,
            0x2e => a != b ? 1UL : 0,
            _ => 0,
        };
        return op is not (0x1b or 0x1d) || b != 0; // division by zero: the expression is wrong
    }

    private static bool Register(int number, ReadOnlySpan<ulong> registers, uint known, out ulong value)
    {
        value = 0;
        if (number >= registers.Length || (known & (1u << number)) == 0)
            return false;
        value = registers[number];
        return true;
    }

    private static bool Push(Span<ulong> stack, ref int top, ulong value)
    {
        if (top == stack.Length)
            return false;
        stack[top++] = value;
        return true;
    }

    private static bool Pop(Span<ulong> stack, ref int top, out ulong value)
    {
        value = 0;
        if (top == 0)
            return false;
        value = stack[--top];
        return true;
    }

    private static bool Fixed(ReadOnlySpan<byte> expression, ref int position, int size, out ulong value)
    {
        value = 0;
        if (position + size > expression.Length)
            return false;
        for (var i = size - 1; i >= 0; i--)
            value = (value << 8) | expression[position + i];
        position += size;
        return true;
    }
}
