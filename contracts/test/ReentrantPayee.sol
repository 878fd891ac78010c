// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

interface IChannels {
    function close(bytes32 id, uint256 amount, bytes calldata signature) external;
    function withdraw() external;
}

/// A payee that tries to take its money twice: when `withdraw` pays it, it calls
/// `withdraw` again before the first call has returned. Used only by the contract's tests.
contract ReentrantPayee {
    IChannels public immutable channels;
    uint256 public reentries;
    uint256 public received;

    constructor(IChannels target) {
        channels = target;
    }

    function closeChannel(bytes32 id, uint256 amount, bytes calldata signature) external {
        channels.close(id, amount, signature);
    }

    function take() external {
        channels.withdraw();
    }

    receive() external payable {
        received += msg.value;
        if (reentries < 3) {
            reentries += 1;
            try channels.withdraw() {} catch {}
        }
    }
}
