// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// One-way payment channels for ZeroState, settled in the chain's native coin.
///
/// A payer locks a deposit for one payee and pays off chain by signing vouchers: EIP-712
/// typed data over the channel id and the cumulative amount, under a domain that names
/// this contract and the chain, so a voucher is good for one channel of one contract on
/// one chain. The rules, argued from who signs what (docs/payments.md, "On a chain"):
///
/// - the payee closes at any time with a voucher the payer signed, and is paid its amount;
/// - the payer's exit is `startClose`, naming what it owes; that opens the channel's
///   challenge period, fixed when the channel was opened, inside which the payee may top
///   it with any voucher for more; after it, anyone may `finalize` on the named amount;
/// - a settled channel's id is never used again, so no voucher is ever good twice;
/// - money leaves only through `withdraw`, which takes the caller's whole settled balance
///   (pull payments: no settlement can be blocked by a party that refuses a transfer).
contract ZeroStateChannels {
    enum Status {
        None,
        Open,
        Closing,
        Settled
    }

    struct Channel {
        address payer;
        uint64 challengePeriod;
        Status status;
        address payee;
        uint64 closesAt;
        uint128 deposit;
        uint128 closingAmount;
    }

    uint64 public constant MIN_CHALLENGE_PERIOD = 1;
    uint64 public constant MAX_CHALLENGE_PERIOD = 30 days;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channel,uint256 amount)");
    bytes32 private constant NAME_HASH = keccak256("ZeroState Channels");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// Half the order of secp256k1: a signature's `s` above it is the malleable twin.
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    mapping(bytes32 => Channel) private channels;
    mapping(address => uint256) public balances;
    uint256 private entered;

    event Opened(
        bytes32 indexed channel, address indexed payer, address indexed payee, uint256 deposit, uint64 challengePeriod
    );
    event CloseStarted(bytes32 indexed channel, uint256 amount, uint64 closesAt);
    event Settled(bytes32 indexed channel, uint256 toPayee, uint256 toPayer);
    event Withdrawn(address indexed account, uint256 amount);

    error BadPayee();
    error EmptyDeposit();
    error DepositTooLarge();
    error BadChallengePeriod();
    error ChannelExists();
    error NotPayer();
    error NotPayee();
    error WrongStatus(Status status);
    error AmountOverDeposit(uint256 amount, uint256 deposit);
    error BadSignature();
    error ChallengePeriodOver();
    error ChallengePeriodRunning(uint64 closesAt);
    error NothingToWithdraw();
    error Reentered();
    error TransferFailed();

    /// The id of the channel `payer` opens to `payee` with `salt`.
    function channelId(address payer, address payee, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(payer, payee, salt));
    }

    /// The EIP-712 domain separator, computed from the chain and the contract it runs on.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// The digest a payer signs to pay `amount` in all on `channel`.
    function voucherDigest(bytes32 channel, uint256 amount) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, channel, amount));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// Locks the value sent for `payee`; the caller is the payer.
    function open(address payee, bytes32 salt, uint64 challengePeriod) external payable returns (bytes32 id) {
        if (payee == address(0) || payee == msg.sender) revert BadPayee();
        if (msg.value == 0) revert EmptyDeposit();
        if (msg.value > type(uint128).max) revert DepositTooLarge();
        if (challengePeriod < MIN_CHALLENGE_PERIOD || challengePeriod > MAX_CHALLENGE_PERIOD) {
            revert BadChallengePeriod();
        }
        id = channelId(msg.sender, payee, salt);
        if (channels[id].status != Status.None) revert ChannelExists();
        channels[id] = Channel({
            payer: msg.sender,
            challengePeriod: challengePeriod,
            status: Status.Open,
            payee: payee,
            closesAt: 0,
            deposit: uint128(msg.value),
            closingAmount: 0
        });
        emit Opened(id, msg.sender, payee, msg.value, challengePeriod);
    }

    /// The payee settles with a voucher the payer signed: at once while the channel is
    /// open, or inside a payer's challenge period, on the larger of the two amounts.
    function close(bytes32 id, uint256 amount, bytes calldata signature) external {
        Channel storage channel = channels[id];
        if (msg.sender != channel.payee) revert NotPayee();
        Status status = channel.status;
        if (status != Status.Open && status != Status.Closing) revert WrongStatus(status);
        if (status == Status.Closing && block.timestamp > channel.closesAt) revert ChallengePeriodOver();
        if (amount > channel.deposit) revert AmountOverDeposit(amount, channel.deposit);
        if (recover(voucherDigest(id, amount), signature) != channel.payer) revert BadSignature();
        uint256 toPayee = amount;
        if (status == Status.Closing && channel.closingAmount > toPayee) toPayee = channel.closingAmount;
        settle(id, channel, toPayee);
    }

    /// The payer's exit: it names what it owes and the challenge period starts.
    function startClose(bytes32 id, uint256 amount) external {
        Channel storage channel = channels[id];
        if (msg.sender != channel.payer) revert NotPayer();
        if (channel.status != Status.Open) revert WrongStatus(channel.status);
        if (amount > channel.deposit) revert AmountOverDeposit(amount, channel.deposit);
        uint64 closesAt = uint64(block.timestamp) + channel.challengePeriod;
        channel.status = Status.Closing;
        channel.closesAt = closesAt;
        channel.closingAmount = uint128(amount);
        emit CloseStarted(id, amount, closesAt);
    }

    /// After a challenge period nobody answered, settles on the amount the payer named.
    function finalize(bytes32 id) external {
        Channel storage channel = channels[id];
        if (channel.status != Status.Closing) revert WrongStatus(channel.status);
        if (block.timestamp <= channel.closesAt) revert ChallengePeriodRunning(channel.closesAt);
        settle(id, channel, channel.closingAmount);
    }

    /// Sends the caller everything settled to it.
    function withdraw() external {
        if (entered != 0) revert Reentered();
        entered = 1;
        uint256 amount = balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
        entered = 0;
    }

    /// A channel's parties, status and amounts.
    function getChannel(bytes32 id)
        external
        view
        returns (
            address payer,
            address payee,
            Status status,
            uint256 deposit,
            uint64 challengePeriod,
            uint64 closesAt,
            uint256 closingAmount
        )
    {
        Channel storage c = channels[id];
        return (c.payer, c.payee, c.status, c.deposit, c.challengePeriod, c.closesAt, c.closingAmount);
    }

    function settle(bytes32 id, Channel storage channel, uint256 toPayee) private {
        uint256 toPayer = channel.deposit - toPayee;
        channel.status = Status.Settled;
        balances[channel.payee] += toPayee;
        balances[channel.payer] += toPayer;
        emit Settled(id, toPayee, toPayer);
    }

    /// The signer of `digest`, refusing malleable and malformed signatures.
    function recover(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        if (signature.length != 65) revert BadSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if ((v != 27 && v != 28) || uint256(s) > HALF_ORDER) revert BadSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature();
    }
}
